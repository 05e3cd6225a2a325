"""The lm-evaluation-harness model over our checkpoints, offline: its numbers are our scorer's."""

import json

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")  # the `eval` extra; `make test` installs it

# pylint: disable=wrong-import-position
from lm_eval.api.instance import Instance  # noqa: E402

from batgpt_jax import checkpoints  # noqa: E402
from batgpt_jax.evaluate import lm_eval_adapter, loglikelihood  # noqa: E402
from batgpt_jax.model.config import ModelConfig  # noqa: E402
from batgpt_jax.sample import engine, options, text  # noqa: E402
from batgpt_jax.train import state as train_state  # noqa: E402
from testlib import direct_continuation_logprob, trained_like_params  # noqa: E402

CFG = ModelConfig(vocab_size=400, max_len=64, init_std=0.2)
PAIRS = [("the cat sees", " the dog"), ("", "bread"), ("the baker sells ", "bread"),
         ("a small town by the river", " and a big market")]
DOCS = [{"question": "the cat sees the", "choices": ["dog", "bread", "river", "town"], "gold": 0},
        {"question": "the baker sells", "choices": ["bread", "cat", "small", "runs"], "gold": 1},
        {"question": "a bird walks to the", "choices": ["market", "dog", "big", "sees"], "gold": 3}]
MC_TASK = """task: batgpt_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def loaded(data_tiny_vocab):
  return options.Loaded(cfg=CFG, params=trained_like_params(CFG, seed=7),
                        vocabulary=data_tiny_vocab, mesh=None, rules=(), source="run/checkpoints/0")


@pytest.fixture(scope="module")
def model(loaded):
  return lm_eval_adapter.BatGPTLM(loaded=loaded, batch_size=3)


def _instances(kind, args_list):
  return [Instance(request_type=kind, doc={}, arguments=args, idx=i)
          for i, args in enumerate(args_list)]


def test_loglikelihoods_equal_our_scorer_and_a_forward_pass(model, loaded):
  got = model.loglikelihood(_instances("loglikelihood", PAIRS))
  requests = [loglikelihood.text_request(loaded.vocabulary, c, x) for c, x in PAIRS]
  ours = loglikelihood.score(loaded, requests, batch_size=16)
  for (logprob, greedy), own, request in zip(got, ours, requests):
    assert logprob == pytest.approx(own.logprob, abs=1e-5) and greedy == own.greedy
    want, want_greedy = direct_continuation_logprob(CFG, loaded.params, *request)
    assert logprob == pytest.approx(want, abs=1e-5) and greedy == want_greedy
  # A trailing space of the context is scored with the continuation, as the whole text reads.
  assert requests[2] == loglikelihood.text_request(loaded.vocabulary, "the baker sells", " bread")


def test_rolling_loglikelihood_equals_ours(model, loaded):
  texts = ["the cat sees the dog", "the baker sells bread in the small town by the river " * 4]
  got = model.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]))
  ours = loglikelihood.rolling_loglikelihood(loaded, texts)
  assert len(text.prompt_ids(loaded.vocabulary, texts[1], "l2r")) > CFG.max_len  # two windows
  assert got == pytest.approx(ours, abs=1e-5)


def test_generate_until_is_the_engines_greedy_text_cut_at_until(model, loaded):
  contexts = ["the cat sees", "the baker sells bread"]
  prompts = [text.prompt_ids(loaded.vocabulary, c, "l2r") for c in contexts]
  greedy = engine.generate_ids(CFG, loaded.params, prompts,
                               engine.SamplingConfig(max_new_tokens=12, temperature=0.0))
  full = [text.continuation_text(loaded.vocabulary, p, ids, "l2r")
          for p, ids in zip(prompts, greedy)]
  got = model.generate_until(_instances(
      "generate_until", [(c, {"until": [], "max_gen_toks": 12}) for c in contexts]))
  assert got == full
  stop = full[0][len(full[0]) // 2:][:2]  # a string that occurs inside the first reply
  cut = model.generate_until(_instances(
      "generate_until", [(contexts[0], {"until": [stop], "max_gen_toks": 12, "do_sample": False})]))
  assert cut == [full[0][:full[0].find(stop)]]
  assert lm_eval_adapter.cut_at_stops("a.b\nc", ["\n", "."]) == "a"


def test_a_local_harness_task_scores_with_our_loglikelihoods(model, loaded, tmp_path,
                                                             monkeypatch):
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
  data = tmp_path / "docs.jsonl"
  data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
  tasks_dir = tmp_path / "tasks"
  tasks_dir.mkdir()
  (tasks_dir / "batgpt_local_mc.yaml").write_text(MC_TASK.format(path=data))
  from lm_eval import tasks as lm_tasks  # pylint: disable=import-outside-toplevel
  manager = lm_tasks.TaskManager(include_path=str(tasks_dir))
  results = lm_eval.simple_evaluate(model=model, tasks=["batgpt_local_mc"], task_manager=manager,
                                    log_samples=True, bootstrap_iters=0)
  # Our own count: lm_eval's multiple choice puts " " between the question and each choice.
  right = 0
  for doc, sample in zip(DOCS, sorted(results["samples"]["batgpt_local_mc"],
                                      key=lambda s: s["doc_id"])):
    ours = [s.logprob for s in loglikelihood.score(loaded, [
        loglikelihood.text_request(loaded.vocabulary, doc["question"], " " + c)
        for c in doc["choices"]])]
    harness = [float(r[0][0]) for r in sample["resps"]]
    assert harness == pytest.approx(ours, abs=1e-5)
    right += int(np.argmax(ours) == doc["gold"])
  assert results["results"]["batgpt_local_mc"]["acc,none"] == pytest.approx(right / len(DOCS))


def test_the_registered_model_loads_a_run_directory(loaded, data_tiny_vocab_path, tmp_path):
  run_dir = tmp_path / "run"
  checkpoints.write_run_dir(str(run_dir), CFG, loaded.params, train_state.OptimizerConfig())
  cls = lm_eval.api.registry.get_model("batgpt")
  assert cls is lm_eval_adapter.BatGPTLM
  model = cls.create_from_arg_string(f"checkpoint={run_dir},vocab={data_tiny_vocab_path}",
                                     {"batch_size": 2, "device": "cpu"})
  got = model.loglikelihood(_instances("loglikelihood", PAIRS[:1]))[0][0]
  want = loglikelihood.score(loaded, [loglikelihood.text_request(loaded.vocabulary, *PAIRS[0])])
  assert got == pytest.approx(want[0].logprob, abs=1e-5)
  with pytest.raises(ValueError, match="checkpoint=RUN_DIR"):
    cls()
