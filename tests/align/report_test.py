"""The alignment report: the last eval of each run, the columns it has, clear errors."""

import json

import pytest

from batgpt_jax.align import report


def _run(tmp_path, name, records):
  run = tmp_path / name
  run.mkdir()
  lines = [json.dumps(r) for r in records]
  (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": ', encoding="utf-8")
  return str(run)


def test_the_table_shows_each_runs_last_eval_and_only_the_columns_present(tmp_path):
  sft = _run(tmp_path, "sft", [{"step": 10, "eval/loss": 0.9, "eval/reply/accuracy": 0.5},
                               {"step": 20, "train/loss": 0.1},
                               {"step": 20, "eval/loss": 0.25, "eval/reply/accuracy": 0.875}])
  dpo = _run(tmp_path, "dpo", [{"step": 40, "eval/loss": 0.3, "eval/reward/accuracy": 0.96,
                                "eval/kl/sequence": 1.5}])
  assert report.last_eval(sft) == {"step": 20, "loss": 0.25, "reply/accuracy": 0.875}
  lines = report.table([sft, dpo]).splitlines()
  assert lines[0].split() == ["run", "step", "loss", "reply", "acc", "pair", "acc", "KL"]
  assert lines[1].split() == ["sft", "20", "0.2500", "0.8750", "-", "-"]
  assert lines[2].split() == ["dpo", "40", "0.3000", "-", "0.9600", "1.5000"]


def test_a_missing_run_or_one_without_evals_is_one_error_line(tmp_path, capsys):
  with pytest.raises(SystemExit, match=r"error: .*nowhere/metrics.jsonl does not exist"):
    report.main([str(tmp_path / "nowhere")])
  bare = _run(tmp_path, "bare", [{"step": 5, "train/loss": 1.0}])
  with pytest.raises(SystemExit, match="has no eval record: run with TrainConfig.eval_every > 0"):
    report.main([bare])
  assert capsys.readouterr().out == ""


def test_a_ppo_run_shows_its_reward_kl_length_and_rule_share(tmp_path):
  ppo = _run(tmp_path, "ppo", [{"step": 40, "eval/reward/score": 1.25, "eval/kl/sequence": 1.5,
                                "eval/reply/length": 6.0, "eval/reply/reference_match": 0.875}])
  lines = report.table([ppo]).splitlines()
  assert lines[0].split() == ["run", "step", "KL", "reward", "reply", "len", "rule"]
  assert lines[1].split() == ["ppo", "40", "1.5000", "1.2500", "6.0000", "0.8750"]
