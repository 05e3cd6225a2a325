import subprocess
import sys

import gin
import pytest
from testlib import REPO

from batgpt_jax import cli, config


@pytest.mark.parametrize("argv, expected", [
    (["--help"], "tokenizer"),
    (["train", "--help"], "--gin_file"),
    (["eval", "--help"], "--gin_file"),
    (["tokenizer", "train", "--help"], "--vocab_size"),
])
def test_help_on_each_command(argv, expected, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  assert expected in capsys.readouterr().out


def test_gin_flags_become_bindings():
  rest, bindings = config.split_bindings(
      ["train", "--gin_file=a.gin", "--gin.TrainConfig.steps=5", "--gin.X.y='a=b'"])
  assert rest == ["train", "--gin_file=a.gin"]
  assert bindings == ["TrainConfig.steps = 5", "X.y = 'a=b'"]


def _main_error(argv, capsys) -> str:
  """Runs `batgpt ARGV` in-process; asserts the bad-input exit code; returns the stderr."""
  assert cli.main(argv) == config.INPUT_ERROR_EXIT
  return capsys.readouterr().err


def test_unknown_gin_binding_is_a_clear_error(capsys):
  message = _main_error(["train", "--gin_file=gin/smoke.gin", "--gin.TrainConfig.stepz=3"], capsys)
  assert "stepz" in message and "Did you mean TrainConfig.steps?" in message


def test_unknown_configurable_suggests_the_right_one(capsys):
  message = _main_error(["train", "--gin.TrainConfg.steps=3"], capsys)
  assert "'TrainConfg'" in message and "Did you mean TrainConfig.steps?" in message


def test_missing_gin_file_is_a_clear_error(capsys):
  message = _main_error(["train", "--gin_file=gin/nope.gin"], capsys)
  assert "gin file 'gin/nope.gin' not found" in message and "binding" not in message


def test_an_invalid_model_config_is_a_one_line_error(capsys):
  message = _main_error(["train", "--gin_file=gin/smoke.gin", "--gin.ModelConfig.n_kv_heads=3"],
                        capsys)
  assert "n_heads=4 must be a multiple of n_kv_heads=3" in message


def _gin_file(tmp_path, text: str) -> str:
  path = tmp_path / "bad.gin"
  path.write_text("include 'smoke.gin'\n" + text)
  return str(path)


# Bad gin input of each kind: one line per problem, naming the file (and line) and the fix.
@pytest.mark.parametrize("make_argv, expected", [
    (lambda d: ["--gin.TrainConfig.steps='abc'"],
     ["TrainConfig.steps = 'abc' is a string, but it takes an int", "unquoted"]),
    (lambda d: [f"--gin_file={_gin_file(d, 'TrainConfig.steps = (3')}"],
     ["bad.gin:3: the gin text ends inside an unclosed bracket"]),
    (lambda d: [f"--gin_file={_gin_file(d, 'TrainConfig.run_dir = runs/x')}"],
     ["bad.gin:2: TrainConfig.run_dir = runs/x is not a gin value", "quote it as "
      "TrainConfig.run_dir = 'runs/x'"]),
    (lambda d: ["--gin.TrainConfig.run_dir=runs/x"],
     ["--gin.TrainConfig.run_dir=\"'runs/x'\""]),
    (lambda d: [f"--gin_file={_gin_file(d, 'TrainConfig.stpes = 3')}"],
     ["bad.gin:2: TrainConfig.stpes: TrainConfig has no parameter 'stpes'. Did you mean "
      "TrainConfig.steps?"]),
    (lambda d: ["--gin_file=" + _gin_file(d, "include 'models/nope.gin'")],
     ["bad.gin: Unable to open file: models/nope.gin. A gin file (or one it includes) was not "
      "found"]),
    (lambda d: ["--gin.TrainConfig.steps=0"],
     ["TrainConfig.steps=0 trains nothing", "--gin.TrainConfig.steps=1000"]),
], ids=["string-for-int", "unclosed-paren", "unquoted-in-file", "unquoted-flag", "misspelt-in-file",
        "missing-include", "zero-steps"])
def test_bad_gin_input_is_one_line_naming_the_fix(make_argv, expected, tmp_path, capsys):
  run_dir = tmp_path / "run"
  message = _main_error(["train", "--gin_file=smoke.gin", f"--gin.TrainConfig.run_dir='{run_dir}'",
                         *make_argv(tmp_path)], capsys)
  for part in expected:
    assert part in message
  assert message.startswith("error: ") and message.count("\n") == 1, message
  assert "Traceback" not in message and not run_dir.exists()


def test_several_misspelt_bindings_get_one_hint_each_the_closest_first(capsys):
  message = _main_error(["train", "--gin_file=smoke.gin", "--gin.TrainConfig.stpes=3",
                         "--gin.TrainConfig.seed=1", "--gin.TrainConfig.log_evry=1",
                         "--gin.ModelConfig.hiden=64", "--gin.OptimizerConfig.learning_rate=0.1"],
                        capsys)
  lines = message.strip().splitlines()
  assert len(lines) == 3, message  # the three misspelt ones; the right ones are not mentioned
  assert lines[0].endswith("TrainConfig.stpes: TrainConfig has no parameter 'stpes'. Did you mean "
                           "TrainConfig.steps?")
  assert "Did you mean TrainConfig.log_every" in lines[1]
  assert "Did you mean ModelConfig.hidden?" in lines[2]
  assert message.count("Did you mean") == 3 and "seed" not in message


def test_a_bad_gin_file_fails_the_real_command_in_one_line_with_exit_2(tmp_path):
  """The same through `batgpt` in a subprocess: exit 2, one line, no traceback, nothing written."""
  run_dir = tmp_path / "run"
  proc = subprocess.run(  # the timeout turns a hang into a failure
      [sys.executable, "-m", "batgpt_jax.cli", "train",
       f"--gin_file={_gin_file(tmp_path, 'TrainConfig.steps = (3')}",
       f"--gin.TrainConfig.run_dir='{run_dir}'"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith("error: bad gin configuration: ")
  assert "bad.gin:3" in proc.stderr and "Traceback" not in proc.stderr
  assert not run_dir.exists()


def test_debug_shows_the_traceback(capsys):
  message = _main_error(["train", "--debug", "--gin_file=gin/smoke.gin",
                         "--gin.TrainConfig.stepz=3"], capsys)
  assert "Traceback (most recent call last)" in message and "InputError" in message


@pytest.mark.parametrize("command", ["", "train", "eval", "tokenizer", "grow", "convert",
                                     "generate", "chat", "annotate"])
def test_help_loads_neither_jax_nor_tensorflow(command):
  """`batgpt --help` and every command's --help import only argparse-level modules."""
  argv = [command, "--help"] if command else ["--help"]
  probe = ("import sys, runpy\n"
           "sys.argv = ['batgpt'] + sys.argv[1:]\n"
           "try:\n  runpy.run_module('batgpt_jax.cli', run_name='__main__')\n"
           "except SystemExit:\n  pass\n"
           "print('HEAVY', sorted(m for m in ('jax', 'tensorflow') if m in sys.modules))\n")
  proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=REPO, capture_output=True,
                        text=True, timeout=60, check=True)
  assert "usage: batgpt" in proc.stdout
  assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_model_size_reads_one_size_file_and_leaves_gin_cleared():
  cfg = config.model_size("tiny")
  assert (cfg.hidden, cfg.n_layers, cfg.vocab_size) == (64, 2, 2048)
  assert gin.config_str() == ""
  with pytest.raises(config.InputError, match="huge"):
    config.model_size("huge")
  assert gin.config_str() == ""
