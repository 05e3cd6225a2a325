import pytest

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


def test_unknown_gin_binding_is_a_clear_error():
  with pytest.raises(SystemExit) as err:
    cli.main(["train", "--gin_file=gin/smoke.gin", "--gin.TrainConfig.stepz=3"])
  message = str(err.value)
  assert "stepz" in message and "bad gin configuration" in message


def test_unknown_configurable_suggests_the_right_one():
  with pytest.raises(SystemExit) as err:
    cli.main(["train", "--gin.TrainConfg.steps=3"])
  assert "TrainConfg" in str(err.value) and "TrainConfig" in str(err.value)


def test_missing_gin_file_is_a_clear_error():
  with pytest.raises(SystemExit) as err:
    cli.main(["train", "--gin_file=gin/nope.gin"])
  assert "nope.gin" in str(err.value)


def test_an_invalid_model_config_is_a_one_line_error():
  with pytest.raises(SystemExit) as err:
    cli.main(["train", "--gin_file=gin/smoke.gin", "--gin.ModelConfig.n_kv_heads=3"])
  assert "n_heads=4 must be a multiple of n_kv_heads=3" in str(err.value)
