"""`batgpt convert` on bad input: one line naming the file and the problem, exit code 2, no
traceback, nothing half-written; an export never replaces files without --overwrite."""

import json
import shutil
import subprocess
import sys

import pytest
from testlib import REPO

from batgpt_jax import cli, config
from batgpt_jax.convert import safetensors_io

FIXTURE = REPO / "tests" / "fixtures" / "checkpoint_v1"  # a micro model, step 2


def _batgpt(*argv) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "batgpt_jax.cli", *argv], cwd=REPO,
                        capture_output=True, text=True, timeout=180, check=False)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == config.INPUT_ERROR_EXIT, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1, proc.stderr[-3000:]
  return errors[0]


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """The fixture checkpoint exported (in-process: the refusal is what runs as a subprocess)."""
  out = tmp_path_factory.mktemp("hf") / "micro"
  assert cli.main(["convert", "export", f"--checkpoint={FIXTURE}", f"--output={out}",
                   "--no_tokenizer", "--quiet"]) == 0
  return out


def test_export_refuses_to_overwrite_then_overwrites_when_asked(tmp_path, hf_dir):
  out = tmp_path / "hf"
  out.mkdir()
  (out / "config.json").write_text('{"mine": 1}\n')
  (out / "tokenizer.json").write_text('{"mine": 2}\n')
  line = _one_error_line(_batgpt("convert", "export", f"--checkpoint={FIXTURE}",
                                 f"--output={out}", f"--vocab={FIXTURE / 'missing.model'}",
                                 "--quiet"))
  assert line == (f"error: {out} already holds config.json, tokenizer.json; export into a new or "
                  "empty directory, or pass --overwrite to replace them.")
  assert sorted(p.name for p in out.iterdir()) == ["config.json", "tokenizer.json"]
  assert (out / "config.json").read_text() == '{"mine": 1}\n'  # untouched

  assert cli.main(["convert", "export", f"--checkpoint={FIXTURE}", f"--output={out}",
                   "--no_tokenizer", "--quiet", "--overwrite"]) == 0
  assert json.loads((out / "config.json").read_text()) == json.loads(
      (hf_dir / "config.json").read_text())
  assert (out / "model.safetensors").read_bytes() == (hf_dir / "model.safetensors").read_bytes()


def test_import_of_a_truncated_safetensors_file_is_one_line(tmp_path, hf_dir):
  source = tmp_path / "hf"
  shutil.copytree(hf_dir, source)
  weights = source / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
  run_dir = tmp_path / "run"
  line = _one_error_line(_batgpt("convert", "import", f"--hf_dir={source}",
                                 f"--output={run_dir}", "--quiet"))
  assert line.startswith(f"error: {weights} is not a readable safetensors file (")
  assert "probably truncated" in line
  assert not run_dir.exists()


@pytest.mark.parametrize("name, text, expected", [
    ("config.json", '{"model_type": "qwen2",', "config.json is not valid JSON (Expecting"),
    ("config.json", "[1, 2]", "config.json holds a JSON list, expected an object"),
    (safetensors_io.INDEX_NAME, '{"weight_map": ', "model.safetensors.index.json is not valid "
                                                   "JSON"),
    (safetensors_io.INDEX_NAME, '{"metadata": {}}', "no 'weight_map' object"),
])
def test_import_of_malformed_json_names_the_file(tmp_path, hf_dir, capsys, name, text, expected):
  source = tmp_path / "hf"
  shutil.copytree(hf_dir, source)
  (source / name).write_text(text)
  run_dir = tmp_path / "run"
  assert cli.main(["convert", "import", f"--hf_dir={source}", f"--output={run_dir}",
                   "--quiet"]) == config.INPUT_ERROR_EXIT
  err = capsys.readouterr().err
  assert f"error: {source / name}" in err and expected in err, err
  assert not run_dir.exists()
