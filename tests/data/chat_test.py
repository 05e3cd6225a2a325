"""Chat rendering: the loss mask covers replies and <eop> only; ids are what inference sees;
over-long conversations drop their oldest turns."""

import numpy as np
import pytest
import sentencepiece as spm

from batgpt_jax.data import chat, preprocessors, vocab

SYSTEM = "Answer briefly, small town friend."
TURNS = (("The cat sees a dog. What does the cat see?", "a dog"),
         ("And the baker sells what?", "The baker sells bread and 7 small cakes."),
         ("Now say 今天天气很好 back to me.", "今天天气很好"))
CONVERSATION = chat.Conversation(TURNS, SYSTEM)


def _ids(vocabulary, text):
  return [int(i) for i in vocabulary.encode(text)]


def _reply_spans(vocabulary, conversation):
  """[start, end) of each reply in the ids, by rendering with and without it (as MaxText does),
  independently of chat.rendered's piece-by-piece tokenization."""
  spans, history = [], []
  for query, reply in conversation.turns:
    prompt = chat.chat_prompt(query, history, conversation.system)
    start = len(_ids(vocabulary, prompt))
    spans.append((start, len(_ids(vocabulary, prompt + chat.reply_block(reply)))))
    history.append((query, reply))
  return spans


def test_chat_prompt_is_unchanged():
  assert chat.chat_prompt("Hi", [("a", "b")], "sys") == (
      "[System]\n\n sys\n\n<eot>[Turn 1]\n\n[User] a\n\n[Assistant] b\n\n<eop>"
      "[Turn 2]\n\n[User] Hi\n\n[Assistant]")
  assert chat.chat_prompt("Hi") == "[Turn 1]\n\n[User] Hi\n\n[Assistant]"
  assert CONVERSATION.text() == chat.chat_prompt(*TURNS[2][:1], TURNS[:2], SYSTEM) + (
      " 今天天气很好\n\n<eop>")


def test_three_turn_mask_is_the_replies_and_their_eop(data_tiny_vocab):
  ids, mask = chat.rendered(data_tiny_vocab, CONVERSATION)
  assert ids == _ids(data_tiny_vocab, CONVERSATION.text())  # one tokenization of the whole
  spans = _reply_spans(data_tiny_vocab, CONVERSATION)
  expected = np.zeros(len(ids), int)
  for start, end in spans:
    expected[start:end] = 1
  np.testing.assert_array_equal(mask, expected)
  sp = data_tiny_vocab.tokenizer
  eop = sp.piece_to_id(chat.END_OF_PROMPT)
  assert sum(mask) == sum(end - start for start, end in spans) == 49
  # Every masked run decodes to " reply\n\n<eop>": reply text, then <eop>; 3 <eop> in all.
  for (start, end), (_, reply) in zip(spans, TURNS):
    assert ids[end - 1] == eop and eop not in ids[start:end - 1]
    assert data_tiny_vocab.decode(ids[start:end - 1]).strip() == reply
  assert [ids[i] for i in np.flatnonzero(mask)].count(eop) == 3
  template = {sp.piece_to_id(p) for p in ("[System]", "[User]", "[Assistant]", "<eot>")}
  assert not template & {ids[i] for i in np.flatnonzero(mask)}


def test_reply_token_count_is_the_assistant_tokens_plus_three_eop(data_tiny_vocab):
  ids, mask = chat.rendered(data_tiny_vocab, CONVERSATION)
  sp = data_tiny_vocab.tokenizer
  # The assistant's tokens in context: what follows [Assistant] up to (not including) <eop>.
  assistant = sum(len(_ids(data_tiny_vocab, "[Assistant]" + f" {r}\n\n")) -
                  len(_ids(data_tiny_vocab, "[Assistant]")) for _, r in TURNS)
  assert sum(mask) == assistant + 3
  assert [sp.id_to_piece(ids[i]) for i in np.flatnonzero(mask)].count("<eop>") == 3


def test_every_target_of_the_training_row_is_reply_text_or_eop(data_tiny_vocab):
  example = chat.training_example(data_tiny_vocab, CONVERSATION, seq_len=512,
                                  eos_id=vocab.EOS_ID)
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  assert example["targets"][-1] == vocab.EOS_ID and example["loss_mask"][-1] == 0
  row = {"tokens": np.concatenate([[l2r_id], example["targets"]])[None],
         "loss_mask": np.concatenate([[0], example["loss_mask"]])[None]}
  n = row["tokens"].shape[1]
  row.update(segment_ids=np.ones((1, n), np.int32), positions=np.arange(n)[None])
  batch = preprocessors.make_targets(row, r2l_id)
  assert "loss_mask" not in batch
  spans = [(s + 1, e + 1) for s, e in _reply_spans(data_tiny_vocab, CONVERSATION)]  # after <l2r>
  in_reply = np.zeros(n, bool)
  for start, end in spans:
    in_reply[start:end] = True
  weights = batch["loss_weights"][0]
  # Position i is trained exactly when it predicts token i+1 of a reply (or its <eop>).
  np.testing.assert_array_equal(weights[:-1] == 1, in_reply[1:])
  predicted = batch["targets"][0][weights == 1]
  np.testing.assert_array_equal(predicted, batch["tokens"][0][1:][in_reply[1:]])
  assert (batch["targets"][0][weights == 0] == 0).all()
  decoded = [data_tiny_vocab.decode(row["tokens"][0][s:e - 1].tolist()).strip()
             for s, e in spans]
  assert decoded == [reply for _, reply in TURNS]


def test_ids_before_each_reply_are_what_inference_encodes(data_tiny_vocab):
  # Inference (chat) encodes <l2r> + vocabulary.encode(chat_prompt(query, history, system)).
  example = chat.training_example(data_tiny_vocab, CONVERSATION, seq_len=512,
                                  eos_id=vocab.EOS_ID)
  l2r_id, _ = vocab.direction_ids(data_tiny_vocab)
  row = [l2r_id] + example["targets"].tolist()
  mask = [0] + example["loss_mask"].tolist()
  starts = [i for i in range(1, len(mask)) if mask[i] and not mask[i - 1]]
  assert len(starts) == 3
  for turn, start in enumerate(starts):
    prompt = chat.chat_prompt(TURNS[turn][0], TURNS[:turn], SYSTEM)
    assert row[:start] == [l2r_id] + _ids(data_tiny_vocab, prompt)


def test_last_turn_only_masks_only_the_last_reply(data_tiny_vocab):
  ids, mask = chat.rendered(data_tiny_vocab, CONVERSATION, last_turn_only=True)
  assert ids == chat.rendered(data_tiny_vocab, CONVERSATION)[0]
  start, end = _reply_spans(data_tiny_vocab, CONVERSATION)[-1]
  assert np.flatnonzero(mask).tolist() == list(range(start, end))
  assert data_tiny_vocab.decode(ids[start:end]).strip() == "今天天气很好\n\n<eop>"


def test_no_system_prompt(data_tiny_vocab):
  conversation = chat.Conversation(TURNS[:1])
  ids, mask = chat.rendered(data_tiny_vocab, conversation)
  assert data_tiny_vocab.decode(ids).startswith("[Turn 1]")
  (start, end), = _reply_spans(data_tiny_vocab, conversation)
  assert np.flatnonzero(mask).tolist() == list(range(start, end)) and end == len(ids)


def test_over_long_conversations_drop_oldest_turns_and_keep_the_system_prompt(data_tiny_vocab):
  turns = TURNS + (("One more: what is 2 + 3?", "5"),)
  conversation = chat.Conversation(turns, SYSTEM)
  def length(kept_turns):  # the row: <l2r> + ids + EOS
    return len(chat.rendered(data_tiny_vocab, chat.Conversation(kept_turns, SYSTEM))[0]) + 2
  assert length(turns) > length(turns[1:]) > length(turns[2:]) > length(turns[3:])
  fit = lambda seq_len: chat.training_example(data_tiny_vocab, conversation, seq_len=seq_len,
                                              eos_id=vocab.EOS_ID)
  np.testing.assert_array_equal(fit(length(turns))["targets"][:-1],
                                chat.rendered(data_tiny_vocab, conversation)[0])
  for seq_len, kept in ((length(turns) - 1, turns[1:]), (length(turns[2:]), turns[2:]),
                        (length(turns[2:]) + 1, turns[2:]), (length(turns[3:]), turns[3:])):
    example = fit(seq_len)
    ids, mask = chat.rendered(data_tiny_vocab, chat.Conversation(kept, SYSTEM))
    np.testing.assert_array_equal(example["targets"], ids + [vocab.EOS_ID])
    np.testing.assert_array_equal(example["loss_mask"], mask + [0])
    text = data_tiny_vocab.decode(example["targets"].tolist())
    assert text.startswith("[System]\n\n " + SYSTEM) and "[Turn 1]\n\n[User] " + kept[0][0] in text
    assert f"[Turn {len(kept) + 1}]" not in text  # renumbered from 1, as chat renders history
    assert len(example["targets"]) + 1 <= seq_len
  # The system prompt and the last turn alone do not fit: the conversation is dropped.
  assert fit(length(turns[3:]) - 1) is None
  assert chat.training_example(data_tiny_vocab, conversation, seq_len=length(turns[3:]),
                               eos_id=vocab.EOS_ID, last_turn_only=True)["loss_mask"].sum() == (
      chat.rendered(data_tiny_vocab, chat.Conversation(turns[3:], SYSTEM))[1].count(1))


def test_a_tokenizer_without_the_chat_pieces_is_refused(tmp_path):
  from testlib import data_sentences  # pylint: disable=import-outside-toplevel
  prefix = tmp_path / "plain"
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(data_sentences(300)), model_prefix=str(prefix), vocab_size=400,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, byte_fallback=True, minloglevel=2,
      user_defined_symbols=["<l2r>", "<r2l>"], normalization_rule_name="identity",
      remove_extra_whitespaces=False, num_threads=1, hard_vocab_limit=False)
  plain = vocab.load_vocabulary(f"{prefix}.model")
  with pytest.raises(ValueError, match=r"user-defined pieces: retrain it with `batgpt tokenizer"):
    chat.rendered(plain, CONVERSATION)
  with pytest.raises(ValueError, match="at least one"):
    chat.Conversation(())
