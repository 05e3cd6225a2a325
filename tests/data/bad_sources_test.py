"""Bad data sources end `batgpt train` promptly with one line naming the file (subprocesses with
a time limit, so that a hang fails the test); a huge document is cut and trains."""

import gzip
import json
import subprocess
import sys
import time

import pytest
from testlib import REPO

from batgpt_jax import cli, config
from batgpt_jax.data import tasks

TRAIN = ["train", "--gin_file=smoke.gin", "--gin.TrainConfig.steps=1",
         "--gin.TrainConfig.eval_every=0", "--gin.TrainConfig.global_batch=2",
         "--gin.DataConfig.shards=2", "--gin.TrainConfig.seq_len=32",
         "--gin.TrainConfig.log_every=1"]


def _train(run_dir, *bindings, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
  start = time.monotonic()
  proc = subprocess.run([sys.executable, "-m", "batgpt_jax.cli", *TRAIN,
                         f"--gin.TrainConfig.run_dir='{run_dir}'", *bindings],
                        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
  return proc, time.monotonic() - start


def _no_checkpoint(run_dir) -> bool:
  """Nothing saved: at most the empty checkpoints/ folder the manager creates up front."""
  return not list((run_dir / "checkpoints").glob("*"))


def _words(n: int, seed: int = 0) -> str:
  import random  # pylint: disable=import-outside-toplevel
  rng = random.Random(seed)
  return " ".join(rng.choice(("the", "cat", "river", "town", "bread", "runs")) for _ in range(n))


def test_a_reader_thread_error_ends_the_command_at_once_with_one_line(tmp_path):
  path = tmp_path / "nofield.jsonl"
  path.write_text("".join(json.dumps({"content" if i == 20 else "text": _words(30, i)}) + "\n"
                          for i in range(40)))
  run_dir = tmp_path / "run"
  proc, _ = _train(run_dir, "--gin.DataConfig.sources=[(@JsonlFiles(), 1.0)]",
                   f"--gin.JsonlFiles.file_pattern='{path}'", timeout=180)  # it hung for 700 s
  assert proc.returncode == config.INPUT_ERROR_EXIT, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert errors == [f"error: {path}:21 has no string field 'text' (found ['content']). Set "
                    "JsonlFiles.text_field to the field that holds the text."], proc.stderr[-3000:]
  assert _no_checkpoint(run_dir)


def test_a_five_megabyte_line_is_cut_and_trains_its_first_step(tmp_path):
  path = tmp_path / "bigline.txt"
  # Document 0 is held out for validation: the huge one is the first that training reads.
  lines = [_words(30, 0), _words(1_000_000, 99)] + [_words(30, i) for i in range(1, 40)]
  path.write_text("\n\n".join(lines) + "\n")
  assert path.stat().st_size > 5_000_000
  run_dir = tmp_path / "run"
  proc, seconds = _train(run_dir, "--gin.DataConfig.sources=[(@TextFiles(), 1.0)]",
                         f"--gin.TextFiles.file_pattern='{path}'",
                         # no shuffle buffer to fill (10,000 documents by default: ~100 cycles of
                         # this one small file before the first step, cut or not)
                         "--gin.DataConfig.shuffle_buffer=1", timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 1/1" in proc.stderr and (run_dir / "checkpoints" / "1").is_dir()
  assert seconds < 240


def test_cut_document_keeps_words_whole_and_bounds_every_piece():
  text = _words(50_000)
  pieces = list(tasks.cut_document(text, 1_000))
  assert "".join(pieces) == text
  assert all(len(p) <= 1_000 for p in pieces) and all(p.endswith(" ") for p in pieces[:-1])
  assert list(tasks.cut_document("x" * 2_500, 1_000)) == ["x" * 1_000, "x" * 1_000, "x" * 500]
  assert list(tasks.cut_document("short", 1_000)) == ["short"]


@pytest.mark.parametrize("head, reason", [
    (gzip.compress(b"hello\n" * 100), "it is gzip data"),
    (b"text\x00\x00binary", "NUL bytes"),
    (b"\xff\xfe\xfa\n" * 20 + b"ok\n", "20 of its first 21 lines are not valid UTF-8"),
    ("plain 文本\n".encode() * 50, None),
], ids=["gzip", "nul", "bad-utf8", "text"])  # stable ids: every xdist worker collects the same
def test_not_text_reason(head, reason):
  found = tasks.not_text_reason(head)
  assert (found is None) if reason is None else (reason in found), found


def test_a_compressed_source_is_refused_at_registration_naming_the_file(tmp_path, capsys):
  path = tmp_path / "big.txt.gz"
  with gzip.open(path, "wt") as f:
    f.write((_words(30) + "\n\n") * 20_000)
  run_dir = tmp_path / "run"
  start = time.monotonic()
  assert cli.main([*TRAIN, f"--gin.TrainConfig.run_dir='{run_dir}'",
                   "--gin.DataConfig.sources=[(@TextFiles(), 1.0)]",
                   f"--gin.TextFiles.file_pattern='{path}'"]) == config.INPUT_ERROR_EXIT
  err = capsys.readouterr().err
  assert f"error: {path} is not a text file: it is gzip data." in err and "gunzip" in err
  assert time.monotonic() - start < 60  # it skipped every line for 3 minutes before
  assert _no_checkpoint(run_dir)


def test_a_vocab_path_that_is_not_sentencepiece_is_one_line(tmp_path, capsys):
  path = tmp_path / "notsp.model"
  path.write_bytes(bytes(range(256)) * 20)
  run_dir = tmp_path / "run"
  assert cli.main([*TRAIN, f"--gin.TrainConfig.run_dir='{run_dir}'",
                   f"--gin.DataConfig.vocab_path='{path}'"]) == config.INPUT_ERROR_EXIT
  err = capsys.readouterr().err
  assert f"error: {path} is not a SentencePiece model (" in err and "Traceback" not in err
  assert _no_checkpoint(run_dir)
