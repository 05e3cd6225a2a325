import gin
import jax
import pytest
from testlib import GIN_DIR

from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig, count_params

BATGPT_15B = ModelConfig(vocab_size=65536, hidden=5632, n_layers=48, n_heads=44, n_kv_heads=2,
                         head_dim=128, ffn=13696, max_len=32768, rope_fraction=0.5,
                         compute_dtype="bfloat16")


def _built_param_count(cfg):
  abstract = transformer.abstract_params(cfg)  # jax.eval_shape: allocates nothing
  return sum(leaf.size for leaf in jax.tree.leaves(abstract))


def test_batgpt_15b_parameter_count_is_exact():
  assert _built_param_count(BATGPT_15B) == 15_030_081_024
  assert count_params(BATGPT_15B) == 15_030_081_024


def test_gin_size_file_builds_the_released_config():
  gin.parse_config_files_and_bindings([str(GIN_DIR / "models" / "batgpt_15b.gin")], [])
  cfg = ModelConfig()
  assert _built_param_count(cfg) == 15_030_081_024
  assert (cfg.rope_dim, cfg.n_heads // cfg.n_kv_heads) == (64, 22)


@pytest.mark.parametrize("kwargs", [
    dict(n_heads=4, n_kv_heads=4, qkv_bias=False),
    dict(n_heads=4, n_kv_heads=1),
    dict(n_heads=6, n_kv_heads=2, ffn=100),
])
def test_closed_form_count_matches_built_model(kwargs):
  cfg = ModelConfig(**kwargs)
  assert _built_param_count(cfg) == count_params(cfg)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_heads=6, n_kv_heads=4), "multiple of n_kv_heads"),
    (dict(rope_style="spiral"), "rope_style"),
    (dict(rope_fraction=1.5), "rope_fraction"),
    (dict(head_dim=10, rope_fraction=0.5), "odd"),
    (dict(remat="everything"), "remat"),
    (dict(attention="flash"), "attention='flash'; expected one of"),
    (dict(attention_block=0), "attention_block"),
])
def test_invalid_configs_name_the_problem(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig(**kwargs)


def test_round_trip_through_dict():
  assert ModelConfig.from_dict(BATGPT_15B.to_dict()) == BATGPT_15B
  with pytest.raises(ValueError, match="Unknown ModelConfig fields"):
    ModelConfig.from_dict({**BATGPT_15B.to_dict(), "n_experts": 8})


def test_a_saved_config_keeps_its_model_and_takes_this_runs_execution_settings():
  """A field the checkpoint predates is its declared default, never a gin binding; the
  execution fields (attention, remat) follow this run's bindings where it sets them."""
  from batgpt_jax import checkpoints  # pylint: disable=import-outside-toplevel
  saved = {k: v for k, v in BATGPT_15B.to_dict().items()
           if k not in ("rope_scaling", "attention", "attention_block")}
  gin.bind_parameter("ModelConfig.rope_scaling", "linear")
  gin.bind_parameter("ModelConfig.rope_scaling_factor", 2.0)
  gin.bind_parameter("ModelConfig.attention", "blockwise")
  cfg = ModelConfig.from_dict(saved)
  assert (cfg.rope_scaling, cfg.attention, cfg.attention_block) == ("none", "blockwise", 512)
  assert checkpoints.model_config_differences(saved, cfg) == []
  scaled = ModelConfig(**{**cfg.to_dict(), "rope_scaling": "linear", "rope_scaling_factor": 2.0})
  assert checkpoints.model_config_differences(saved, scaled) == [
      "rope_scaling: checkpoint has 'none', config has 'linear'",
      "rope_scaling_factor: checkpoint has 1.0, config has 2.0"]
  other_run = ModelConfig(**{**cfg.to_dict(), "attention": "xla", "remat": "full"})
  assert checkpoints.model_config_differences(cfg.to_dict(), other_run) == []
