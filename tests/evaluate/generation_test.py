"""Generation tasks: replies are the engine's, scores equal a hand count, normalisation, the
packaged set, bad prompt files, and the command end to end."""

import json

import pytest

from batgpt_jax import checkpoints, cli
from batgpt_jax.data import chat, evalsets
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.evaluate import generation
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import engine, options, text
from batgpt_jax.train import state as train_state
from testlib import trained_like_params

CFG = ModelConfig(vocab_size=400, max_len=256, init_std=0.2)
QUERIES = ("the red fox runs", "a small town by the river", "what is the dog eating",
           "bread and water", "the cat sleeps", "blue sky at night")


@pytest.fixture(scope="module")
def loaded(data_tiny_vocab):
  return options.Loaded(cfg=CFG, params=trained_like_params(CFG, seed=3),
                        vocabulary=data_tiny_vocab, mesh=None, rules=(), source="run/checkpoints/4")


def _prompts(answers_per_query=None):
  return [generation.Prompt(q, tuple(answers_per_query[i]) if answers_per_query else ("x",),
                            "even" if i % 2 == 0 else "odd", None) for i, q in enumerate(QUERIES)]


def _engine_reply(loaded_, prompt_text, stop_ids, max_new_tokens):
  """The reply straight from the engine: its ids after the prompt, decoded beside it."""
  ids = text.prompt_ids(loaded_.vocabulary, prompt_text, "l2r")
  out = engine.generate_ids(loaded_.cfg, loaded_.params, [ids],
                            engine.SamplingConfig(max_new_tokens=max_new_tokens,
                                                  stop_ids=stop_ids))[0]
  return text.continuation_text(loaded_.vocabulary, ids, out, "l2r")


@pytest.mark.parametrize("template", generation.TEMPLATES)
def test_replies_are_the_engines_greedy_output(loaded, template):
  cfg = generation.GenerationConfig(template=template, max_new_tokens=10, batch_size=4,
                                    until=("\n",))
  got = generation.replies(loaded, _prompts(), cfg)
  eop = loaded.vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  for query, reply in zip(QUERIES, got):
    if template == "chat":
      want = _engine_reply(loaded, chat.chat_prompt(query), (vocab_lib.EOS_ID, eop), 10).strip()
    else:
      want = _engine_reply(loaded, query, (vocab_lib.EOS_ID,), 10).split("\n")[0].strip()
    assert reply == want
  assert any(got), "a random model should say something; the test needs non-empty replies"


def test_scores_equal_a_hand_count(loaded):
  cfg = generation.GenerationConfig(template="raw", max_new_tokens=10, batch_size=8)
  replies = generation.replies(loaded, _prompts(), cfg)
  answers, hand = [], {"even": [0, 0, 0], "odd": [0, 0, 0]}  # exact, contains, count
  for i, reply in enumerate(replies):
    category = "even" if i % 2 == 0 else "odd"
    words = generation.normalise(reply).split(" ")
    if i % 3 == 0 and generation.normalise(reply):
      answers.append([f"  {reply.upper()}!  "])  # the same reply, as normalisation sees it
      hand[category][0] += 1
      hand[category][1] += 1
    elif i % 3 == 1 and len(words) > 1:
      answers.append([words[-1]])  # a part of the reply: contains, not exact
      hand[category][1] += 1
    else:
      answers.append(["zebra crossing at dawn"])
    hand[category][2] += 1
  results = generation.score(_prompts(answers), replies)
  for category, (exact, contains, count) in hand.items():
    assert results["categories"][category] == {"exact_match": exact / count,
                                               "contains": contains / count, "count": count}
  total = [sum(v[k] for v in hand.values()) for k in range(3)]
  assert results["overall"] == {"exact_match": total[0] / total[2],
                                "contains": total[1] / total[2], "count": total[2]}
  assert total[0] >= 1, "the fixture must hold at least one exact match"


def test_normalisation():
  assert generation.normalise("  The  Answer\tIS 7. ") == "the answer is 7"
  assert generation.exact_match("７。", ["7"])  # full-width digit, CJK full stop
  assert generation.exact_match("“星期一”", ["星期一"])
  assert not generation.exact_match("7 apples", ["7"])
  assert generation.contains("7 apples", ["7"]) and not generation.contains("8", ["7"])
  assert generation.contains("anything", ["", "nothing"]) is False  # an empty answer never matches
  assert generation.cut_at("blue\nred", ("\n",)) == "blue"
  assert generation.cut_at("a. b? c", (".", "?")) == "a"


def test_the_packaged_set_has_english_and_chinese_categories():
  prompts = generation.read_prompts(evalsets.PACKAGED_DIR / generation.PACKAGED_SET)
  categories = {p.category for p in prompts}
  assert len(prompts) == 120 and len(categories) == 6
  assert all(p.answers and all(a for a in p.answers) for p in prompts)
  assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in p.prompt) for p in prompts) == 60
  chosen = generation.read_prompts(evalsets.PACKAGED_DIR / generation.PACKAGED_SET,
                                   categories=("calendar",))
  assert {p.category for p in chosen} == {"calendar"} and len(chosen) == 20


def test_bad_prompt_files_say_what_to_change(tmp_path):
  path = tmp_path / "set.jsonl"
  with pytest.raises(FileNotFoundError, match="does not exist; give a JSONL prompt set"):
    generation.read_prompts(path)
  for body, message in (('{"prompt": "a", "answers": ["b"]}\n{oops\n', "set.jsonl:2: not JSON"),
                        ('{"answers": ["b"]}\n', "needs a string 'prompt'"),
                        ('{"prompt": "a"}\n', "no answer to score against"),
                        ('{"prompt": "a", "answers": [3]}\n', "list of strings"),
                        ("\n\n", "holds no prompts")):
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
      generation.read_prompts(path)
  path.write_text('{"prompt": "a"}\n')
  assert generation.read_prompts(path, need_answers=False)[0].answers == ()
  path.write_text('{"prompt": "a", "answer": "b", "category": "c"}\n')
  with pytest.raises(ValueError, match=r"names \['d'\].*has \['c'\]"):
    generation.read_prompts(path, categories=("d",))
  with pytest.raises(ValueError, match="template='markdown'"):
    generation.GenerationConfig(template="markdown")


def test_the_command_prints_writes_json_and_tensorboard(loaded, data_tiny_vocab_path, tmp_path,
                                                       capsys):
  run_dir = tmp_path / "run"
  checkpoints.write_run_dir(str(run_dir), CFG, loaded.params, train_state.OptimizerConfig())
  replies = generation.replies(loaded, _prompts(), generation.GenerationConfig(max_new_tokens=6))
  prompt_set = tmp_path / "mine.jsonl"
  prompt_set.write_text("".join(json.dumps({"prompt": q, "answers": [r or "zebra"], "category": "c"})
                                + "\n" for q, r in zip(QUERIES, replies)))
  code = cli.main(["eval", "--task=generation", f"--checkpoint={run_dir}",
                   f"--vocab={data_tiny_vocab_path}", f"--eval_file={prompt_set}",
                   "--max_new_tokens=6", "--show=1"])
  assert code == 0
  out = capsys.readouterr()
  assert "overall" in out.out + out.err
  written = json.loads((run_dir / "eval" / "generation-mine-0.json").read_text())
  hits = sum(bool(generation.normalise(r)) for r in replies)
  assert written["overall"]["exact_match"] == pytest.approx(hits / len(QUERIES), abs=1e-12)
  assert [r["reply"] for r in written["replies"]] == replies
  assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text("not json\n")
  assert cli.main(["eval", "--task=generation", f"--checkpoint={run_dir}",
                   f"--vocab={data_tiny_vocab_path}", f"--eval_file={bad}"]) == 2
  assert "bad.jsonl:1: not JSON" in capsys.readouterr().err
