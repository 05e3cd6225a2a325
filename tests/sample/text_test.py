"""Prompts in both directions, and continuations that keep the spaces joining them to the prompt."""

from batgpt_jax.data import chat
from batgpt_jax.data import vocab
from batgpt_jax.sample import engine, options, text

HEAD, TAIL = "The baker sells bread to", " the market."


def test_directions(data_tiny_vocab):
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  sentence = "The cat sees a bird."
  ids = [int(i) for i in data_tiny_vocab.encode(sentence)]
  assert text.prompt_ids(data_tiny_vocab, sentence, "l2r") == [l2r_id] + ids
  assert text.prompt_ids(data_tiny_vocab, sentence, "r2l") == [r2l_id] + ids[::-1]
  assert text.output_text(data_tiny_vocab, ids[::-1], "r2l") == sentence
  assert text.output_text(data_tiny_vocab, ids, "l2r") == sentence


def _split_ids(vocabulary):
  """The ids of HEAD + TAIL, cut where HEAD ends (SentencePiece keeps words whole here)."""
  whole = [int(i) for i in vocabulary.encode(HEAD + TAIL)]
  head = [int(i) for i in vocabulary.encode(HEAD)]
  assert whole[:len(head)] == head
  return head, whole[len(head):]


def test_l2r_continuation_keeps_its_leading_space(data_tiny_vocab):
  _, tail = _split_ids(data_tiny_vocab)
  prompt = text.prompt_ids(data_tiny_vocab, HEAD, "l2r")
  assert text.output_text(data_tiny_vocab, tail, "l2r") == TAIL.lstrip()  # the old bug
  assert text.continuation_text(data_tiny_vocab, prompt, tail, "l2r") == TAIL
  assert HEAD + text.continuation_text(data_tiny_vocab, prompt, tail, "l2r") == HEAD + TAIL


def test_r2l_continuation_keeps_the_space_before_the_prompt(data_tiny_vocab):
  head, _ = _split_ids(data_tiny_vocab)
  prompt = text.prompt_ids(data_tiny_vocab, TAIL.lstrip(), "r2l")
  written = head[::-1]  # the model writes what comes before the prompt, backwards
  before = text.continuation_text(data_tiny_vocab, prompt, written, "r2l")
  assert before == HEAD + " "
  assert before + TAIL.lstrip() == HEAD + TAIL


def test_generate_text_in_both_directions(batgpt_model, data_tiny_vocab):
  cfg, params = batgpt_model
  sampling = engine.SamplingConfig(max_new_tokens=10, stop_ids=())  # engine_test's GREEDY
  texts = ["The cat", "今天天气", "A dog"]
  for direction in ("l2r", "r2l"):
    got = text.generate_text(cfg, params, data_tiny_vocab, texts, sampling, direction=direction)
    prompts = [text.prompt_ids(data_tiny_vocab, t, direction) for t in texts]
    ids = engine.generate_ids(cfg, params, prompts, sampling)
    assert got == [text.continuation_text(data_tiny_vocab, p, i, direction)
                   for p, i in zip(prompts, ids)]
    assert all(len(i) == 10 for i in ids)


def test_chat_replies_from_a_checkpoint(tiny_run, data_tiny_vocab_path, batgpt_model,
                                       data_tiny_vocab):
  # the call evaluation makes: a checkpoint, rendered chat prompts, batches of max_batch
  loaded = options.load(tiny_run, vocab_path=data_tiny_vocab_path)
  prompts = [chat.chat_prompt("Hi"), chat.chat_prompt("And now?", [("Hi", "Hello!")]),
             chat.chat_prompt("Bye", system="Be brief.")]
  sampling = engine.SamplingConfig(max_new_tokens=10)
  replies = text.chat_replies(loaded.cfg, loaded.params, loaded.vocabulary, prompts, sampling,
                              max_batch=2)
  # the same as the engine on the parameters in memory, all prompts at once, <eop> a stop
  cfg, params = batgpt_model
  eop = data_tiny_vocab.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  chat_sampling = text.with_chat_stop(data_tiny_vocab, sampling)
  assert chat_sampling.stop_ids == (vocab.EOS_ID, eop)
  ids = [text.prompt_ids(data_tiny_vocab, p, "l2r") for p in prompts]
  out = engine.sample(cfg, params, ids, chat_sampling)
  assert replies == [text.continuation_text(data_tiny_vocab, p, i, "l2r").strip()
                     for p, i in zip(ids, out.output_ids())]


def test_chat_template():
  assert chat.chat_prompt("How are you?") == "[Turn 1]\n\n[User] How are you?\n\n[Assistant]"
  assert chat.chat_prompt("And now?", history=[("Hi", "Hello!")], system="Be brief.") == (
      "[System]\n\n Be brief.\n\n<eot>"
      "[Turn 1]\n\n[User] Hi\n\n[Assistant] Hello!\n\n<eop>"
      "[Turn 2]\n\n[User] And now?\n\n[Assistant]")


def test_word_unit_r2l_prompts_and_continuations(data_tiny_vocab):
  # A word-unit model reads R2L text word by word, last word first: its prompt is reversed so,
  # and what it writes (words last to first) is put back in reading order.
  from batgpt_jax.data import word_units  # pylint: disable=import-outside-toplevel
  _, r2l_id = vocab.direction_ids(data_tiny_vocab)
  starts = word_units.word_start_table(data_tiny_vocab)
  tail = TAIL.lstrip()
  prompt = text.prompt_ids(data_tiny_vocab, tail, "r2l", "word")
  assert prompt[0] == r2l_id
  assert data_tiny_vocab.decode(prompt[1:]) == "market. the"
  assert text.prompt_ids(data_tiny_vocab, tail, "r2l") != prompt  # the token unit differs
  head, _ = _split_ids(data_tiny_vocab)
  written = word_units.reversed_units(head, "word", starts)  # HEAD's words, last first
  assert data_tiny_vocab.decode(written) == "to bread sells baker The"
  before = text.continuation_text(data_tiny_vocab, prompt, written, "r2l", "word")
  assert before + tail == HEAD + TAIL
  assert text.output_text(data_tiny_vocab, written, "r2l", "word") == HEAD
  assert text.prompt_ids(data_tiny_vocab, HEAD, "l2r", "word") == text.prompt_ids(
      data_tiny_vocab, HEAD, "l2r")  # l2r ignores the unit
