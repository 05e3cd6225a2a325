"""orbax -> Hugging Face -> orbax is bit-identical; bad input is refused by name."""

import dataclasses
import json
import os
import re

import jax
import numpy as np
import pytest

from batgpt_jax import checkpoints
from batgpt_jax.convert import command, hf_to_orbax, layouts, orbax_to_hf, safetensors_io
from batgpt_jax.convert.layout import LayoutError
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ROPE_SCALING_FIELDS, ModelConfig
from batgpt_jax.train import state as train_state

BASE = dict(vocab_size=96, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, ffn=40,
            max_len=64)
CONFIGS = {
    "qwen2": ModelConfig(**BASE, rope_style="half_split", rope_fraction=1.0, qkv_bias=True),
    "llama": ModelConfig(**BASE, rope_style="half_split", rope_fraction=1.0, qkv_bias=False,
                         remat="full", norm_eps=1e-6),
    "batgpt": ModelConfig(**BASE, rope_style="interleaved", rope_fraction=0.5, qkv_bias=True,
                          compute_dtype="bfloat16"),
}


def _random_params(cfg: ModelConfig, seed: int = 0) -> dict:
  params = transformer.init_params(cfg, seed)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return treedef.unflatten([(x + 0.1 * jax.random.normal(k, x.shape)).astype(x.dtype)
                            for x, k in zip(leaves, keys)])


def _run(tmp_path, cfg: ModelConfig, name: str = "run") -> tuple[str, dict]:
  params = _random_params(cfg)
  checkpoints.write_run_dir(str(tmp_path / name), cfg, params, train_state.OptimizerConfig())
  return str(tmp_path / name), params


def _flat(params: dict) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}


@pytest.mark.parametrize("layout", sorted(CONFIGS))
def test_round_trip_is_bit_identical(layout, tmp_path):
  cfg = CONFIGS[layout]
  run_dir, params = _run(tmp_path, cfg)
  exported = orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False,
                                max_shard_bytes=20_000)  # several shards and an index
  assert exported.layout == layout
  assert safetensors_io.INDEX_NAME in exported.files
  assert len([f for f in exported.files if f.endswith(".safetensors")]) > 2
  with open(tmp_path / "hf" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["model_type"] == layout

  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)
  assert imported.model_cfg == cfg  # every field, remat and dtypes included
  checkpoints_dir, step = checkpoints.find_step(str(tmp_path / "back"))
  back = _flat(checkpoints.read_params(checkpoints_dir, step))
  want = _flat(params)
  assert back.keys() == want.keys()
  for key, value in want.items():
    assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def test_imported_run_restores_for_training(tmp_path, axis_rules):
  """The imported run is what `batgpt train` resumes from: same state tree, config and gin."""
  import gin  # pylint: disable=import-outside-toplevel
  from batgpt_jax import parallel  # pylint: disable=import-outside-toplevel
  cfg = CONFIGS["qwen2"]
  run_dir, _ = _run(tmp_path, cfg)
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "new"), progress=False)
  gin.parse_config_file(imported.gin_path)
  gin_cfg = ModelConfig()
  assert gin_cfg == cfg
  tx = train_state.make_optimizer(train_state.OptimizerConfig(), 100)
  mesh = parallel.mesh_from_config(parallel.MeshConfig(shape=(-1, 1, 1)))
  abstract = train_state.abstract_state(gin_cfg, tx)
  shardings = train_state.state_shardings(gin_cfg, tx, mesh, axis_rules, abstract)
  mngr = checkpoints.manager(str(tmp_path / "new" / "checkpoints"), keep=2, async_save=False)
  try:
    restored = checkpoints.restore_latest(mngr, abstract, shardings, gin_cfg, "")
  finally:
    mngr.close()
  assert restored.step == 0 and restored.data_position == 0
  assert int(restored.state["step"]) == 0


def test_bfloat16_export_and_import(tmp_path):
  cfg = CONFIGS["qwen2"]
  run_dir, params = _run(tmp_path, cfg)
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), dtype="bfloat16", progress=False)
  reader = safetensors_io.SafetensorsReader(str(tmp_path / "hf"))
  assert {reader.dtype(n) for n in reader.shapes()} == {"BF16"}
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"),
                                   dtype="bfloat16", progress=False)
  assert imported.model_cfg.param_dtype == "bfloat16"
  checkpoints_dir, step = checkpoints.find_step(str(tmp_path / "back"))
  back = checkpoints.read_params(checkpoints_dir, step)
  q = np.asarray(back["blocks"]["attn"]["q"])
  assert q.dtype == np.dtype("bfloat16")
  np.testing.assert_array_equal(q, np.asarray(params["blocks"]["attn"]["q"]).astype(q.dtype))


def test_layout_choice_and_refusals():
  assert layouts.layout_for(CONFIGS["qwen2"]).NAME == "qwen2"
  assert layouts.layout_for(CONFIGS["llama"]).NAME == "llama"
  assert layouts.layout_for(CONFIGS["batgpt"]).NAME == "batgpt"
  with pytest.raises(LayoutError, match=r"(?s)rope_style='interleaved'.*qwen2 rotates pairs"):
    layouts.layout_for(CONFIGS["batgpt"], "qwen2")
  with pytest.raises(LayoutError, match="qkv_bias=True: llama has no q/k/v biases"):
    layouts.layout_for(CONFIGS["qwen2"], "llama")
  odd = dataclasses.replace(CONFIGS["batgpt"], rope_fraction=1.0, head_dim=16)
  with pytest.raises(LayoutError) as err:
    layouts.layout_for(odd)
  message = str(err.value)
  for reason in ("qwen2: rope_style='interleaved'", "llama:", "batgpt: rope_fraction=1.0",
                 "hidden=32 != n_heads * head_dim = 64"):
    assert reason in message


# Each: our fields, and the rope_parameters transformers reads them from (rope_theta 10000).
SCALED = {
    "linear": (dict(rope_scaling="linear", rope_scaling_factor=2.0),
               {"rope_type": "linear", "factor": 2.0}),
    "llama3": (dict(rope_scaling="llama3", rope_scaling_factor=4.0, rope_original_max_len=16,
                    rope_low_freq_factor=2.0, rope_high_freq_factor=8.0),
               {"rope_type": "llama3", "factor": 4.0, "original_max_position_embeddings": 16,
                "low_freq_factor": 2.0, "high_freq_factor": 8.0}),
    "yarn": (dict(rope_scaling="yarn", rope_scaling_factor=4.0, rope_original_max_len=16,
                  rope_beta_fast=16.0, rope_beta_slow=2.0, rope_truncate=False,
                  rope_attention_factor=1.25),
             {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
              "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False, "attention_factor": 1.25}),
}


@pytest.mark.parametrize("layout,scaling", [("llama", "linear"), ("llama", "llama3"),
                                            ("llama", "yarn"), ("qwen2", "yarn")])
def test_round_trip_keeps_rope_scaling(layout, scaling, tmp_path):
  fields, hf_rope = SCALED[scaling]
  cfg = dataclasses.replace(CONFIGS[layout], **fields)
  run_dir, _ = _run(tmp_path, cfg)
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  config_path = tmp_path / "hf" / "config.json"
  hf = json.loads(config_path.read_text())
  want = {"rope_theta": 10000.0, **hf_rope}
  assert hf["rope_parameters"] == want and hf["rope_scaling"] == want
  assert hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"),
                               progress=False).model_cfg == cfg

  # From transformers' fields alone (a config.json that our export did not write)
  del hf[orbax_to_hf.STASH_KEY], hf["rope_scaling"]
  config_path.write_text(json.dumps(hf))
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "plain"), progress=False)
  assert ({k: getattr(imported.model_cfg, k) for k in ROPE_SCALING_FIELDS}
          == {k: getattr(cfg, k) for k in ROPE_SCALING_FIELDS})


def test_unscaled_export_writes_plain_rope_and_old_exports_still_round_trip(tmp_path):
  run_dir, _ = _run(tmp_path, CONFIGS["llama"])
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  config_path = tmp_path / "hf" / "config.json"
  hf = json.loads(config_path.read_text())
  assert hf["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
  assert "rope_scaling" not in hf
  # an export made before the scaling fields existed: its stash lacks them
  for key in ROPE_SCALING_FIELDS:
    del hf[orbax_to_hf.STASH_KEY]["model"][key]
  config_path.write_text(json.dumps(hf))
  imported = hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)
  assert imported.model_cfg == CONFIGS["llama"]  # the stash was used: remat='full' kept


def test_rope_scaling_imports_as_transformers_reads_it(tmp_path):
  (tmp_path / "hf").mkdir()
  base = {"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 4, "intermediate_size": 40, "max_position_embeddings": 256}
  def fields(**hf):
    config = dict(base, **hf)
    return hf_to_orbax.model_config(config, None, ModelConfig(), None)[0]
  # rope_scaling wins over rope_parameters; yarn without original_max_position_embeddings
  # takes max_position_embeddings; mscale / mscale_all_dim give the attention factor.
  cfg = fields(rope_parameters={"rope_type": "linear", "factor": 2.0},
               rope_scaling={"type": "yarn", "factor": 4.0, "mscale": 0.707,
                             "mscale_all_dim": 1.0})
  assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.rope_original_max_len) == ("yarn", 4.0,
                                                                                     256)
  ln4 = np.log(4.0)
  assert cfg.rope_attention_factor == pytest.approx((0.0707 * ln4 + 1) / (0.1 * ln4 + 1))
  cfg = fields(rope_scaling={"rope_type": "yarn", "original_max_position_embeddings": 64})
  assert (cfg.rope_scaling_factor, cfg.rope_attention_factor) == (4.0, 0.0)  # 256 / 64; derived
  for rope, reason in (({"rope_type": "longrope", "short_factor": [1.0]}, "rope type 'longrope'"),
                       ({"rope_type": "llama3", "factor": 8.0},
                        r"rope type 'llama3' without \['low_freq_factor', 'high_freq_factor'\]"),
                       ({"rope_type": "linear", "factor": 0.5},
                        "ModelConfig refuses: .*rope_scaling_factor=0.5; expected >= 1")):
    with pytest.raises(LayoutError, match=reason):
      fields(rope_parameters=rope)


def test_batgpt_layout_refuses_rope_scaling(tmp_path):
  cfg = dataclasses.replace(CONFIGS["batgpt"], rope_scaling="linear", rope_scaling_factor=2.0)
  reason = ("rope_scaling='linear': BatGPT's released modeling_batgpt.py has no RoPE scaling, so "
            "only an unscaled model (rope_scaling='none') exports as batgpt")
  with pytest.raises(LayoutError, match=re.escape(reason)):
    layouts.layout_for(cfg, "batgpt")
  with pytest.raises(LayoutError, match=r"No Hugging Face layout fits") as err:
    layouts.layout_for(cfg)
  assert f"batgpt: {reason}" in str(err.value)
  run_dir, _ = _run(tmp_path, cfg)
  with pytest.raises(LayoutError, match=re.escape(reason)):
    orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  assert not (tmp_path / "hf").exists()


def test_not_a_checkpoint(tmp_path):
  (tmp_path / "stuff").mkdir()
  (tmp_path / "stuff" / "notes.txt").write_text("hello")
  with pytest.raises(FileNotFoundError, match=r"is not an orbax checkpoint.*notes\.txt"):
    orbax_to_hf.export(str(tmp_path / "stuff"), str(tmp_path / "hf"), progress=False)
  assert not (tmp_path / "stuff" / "checkpoints").exists()  # nothing was created there


def test_bad_safetensors_are_named(tmp_path):
  run_dir, _ = _run(tmp_path, CONFIGS["llama"])
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  reader = safetensors_io.SafetensorsReader(str(tmp_path / "hf"))
  tensors = {n: reader.get(n) for n in reader.shapes()}
  del reader
  del tensors["model.layers.1.mlp.up_proj.weight"]
  tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(32, np.float32)
  tensors["model.norm.weight"] = np.ones(33, np.float32)
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  save_file(tensors, str(tmp_path / "hf" / "model.safetensors"))
  with pytest.raises(LayoutError) as err:
    hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)
  message = str(err.value)
  assert "missing (1): model.layers.1.mlp.up_proj.weight" in message
  assert "unexpected (1): model.layers.0.self_attn.q_proj.bias" in message
  assert "model.norm.weight: expected [32], found [33]" in message
  assert not (tmp_path / "back").exists()


def test_config_that_does_not_fit_is_refused(tmp_path):
  (tmp_path / "hf").mkdir()
  config = {"model_type": "qwen2", "vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 40,
            "use_sliding_window": True, "hidden_act": "gelu",
            "rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}
  (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
  with pytest.raises(LayoutError) as err:
    hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)
  for reason in ("hidden_act='gelu'", "rope type 'dynamic': only 'default', 'linear', 'llama3' "
                 "and 'yarn' RoPE can be represented", "use_sliding_window=True"):
    assert reason in str(err.value)
  (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(LayoutError, match=r"model_type 'gpt2'.*\['batgpt', 'llama', 'qwen2'\]"):
    hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)


def test_import_refuses_an_existing_run(tmp_path):
  run_dir, _ = _run(tmp_path, CONFIGS["qwen2"])
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    hf_to_orbax.import_hf(str(tmp_path / "hf"), run_dir, progress=False)


def test_convert_command_line(tmp_path, capsys):
  import argparse  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="batgpt")
  command.add_convert_command(parser.add_subparsers(dest="command", required=True))
  run_dir, _ = _run(tmp_path, CONFIGS["batgpt"])
  args = parser.parse_args(["convert", "export", f"--checkpoint={run_dir}/checkpoints/0",
                            f"--output={tmp_path}/hf", "--no_tokenizer", "--quiet",
                            "--max_shard_size=10KB"])
  assert args.run(args, "") == 0
  assert "as batgpt to" in capsys.readouterr().out
  assert os.path.exists(tmp_path / "hf" / safetensors_io.INDEX_NAME)
  args = parser.parse_args(["convert", "import", f"--hf_dir={tmp_path}/hf",
                            f"--output={tmp_path}/back", "--quiet"])
  assert args.run(args, "") == 0
  assert "model.gin" in capsys.readouterr().out
  args = parser.parse_args(["convert", "export", f"--checkpoint={tmp_path}/nowhere",
                            f"--output={tmp_path}/hf2", "--layout=llama"])
  assert args.run(args, "") == 2
  assert "is not an orbax checkpoint" in capsys.readouterr().err
  args = parser.parse_args(["convert", "export", f"--checkpoint={run_dir}",
                            f"--output={tmp_path}/hf2", "--layout=llama", "--no_tokenizer"])
  assert args.run(args, "") == 2
  assert "cannot be written exactly as 'llama'" in capsys.readouterr().err
  assert command.parse_size("2GB") == 2 * 10**9 and command.parse_size("1GiB") == 2**30


def _batgpt_reference_logits(hf_dir: str, tokens: np.ndarray) -> np.ndarray:
  """BatGPT-15B-sirius' forward pass (modeling_batgpt.py semantics) in numpy, from the files."""
  with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
    c = json.load(f)
  reader = safetensors_io.SafetensorsReader(hf_dir)
  w = lambda name: reader.get(name).astype(np.float64)
  hidden, heads, kv = c["hidden_size"], c["n_head"], c["num_heads_per_kv"]
  hd, eps, length = hidden // c["n_head"], c["layer_norm_epsilon"], tokens.shape[0]
  rms = lambda x, g: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * g
  n_elem = hd // 2  # rotary cache over half the head: pairs (2i, 2i+1) of the first n_elem dims
  theta = 1.0 / (10000 ** (np.arange(0, n_elem, 2) / n_elem))
  angles = np.outer(np.arange(length), theta)[:, None, :]  # [length, 1, n_elem / 2]

  def rotary(x):  # [length, heads, hd]
    rot, rest = x[..., :n_elem], x[..., n_elem:]
    a, b = rot[..., 0::2], rot[..., 1::2]
    out = np.stack([a * np.cos(angles) - b * np.sin(angles),
                    b * np.cos(angles) + a * np.sin(angles)], -1).reshape(rot.shape)
    return np.concatenate([out, rest], -1)

  x = w("model.word_embeddings.weight")[tokens]
  for i in range(c["n_layer"]):
    p = f"model.encoder.layers.{i}."
    h = rms(x, w(p + "input_layernorm.weight"))
    proj = lambda name, n: (h @ w(p + f"self_attention.{name}.weight").T
                            + w(p + f"self_attention.{name}.bias")).reshape(length, n, hd)
    q, k, v = rotary(proj("query_proj", heads)), rotary(proj("key_proj", kv)), proj("value_proj",
                                                                                    kv)
    k, v = np.repeat(k, heads // kv, axis=1), np.repeat(v, heads // kv, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = np.einsum("hqk,khd->qhd", probs, v).reshape(length, hidden)
    x = x + context @ w(p + "self_attention.dense.weight").T
    h = rms(x, w(p + "post_attention_layernorm.weight")) @ w(p + "mlp.dense_h_to_4h.weight").T
    gate, up = np.split(h, 2, axis=-1)  # swiglu: chunk(2), silu on the first half
    x = x + (gate / (1 + np.exp(-gate)) * up) @ w(p + "mlp.dense_4h_to_h.weight").T
  return rms(x, w("model.encoder.ln_f.weight")) @ w("lm_head.weight").T


def test_batgpt_export_matches_its_reference_forward(tmp_path):
  cfg = dataclasses.replace(CONFIGS["batgpt"], compute_dtype="float32")
  run_dir, params = _run(tmp_path, cfg)
  orbax_to_hf.export(run_dir, str(tmp_path / "hf"), progress=False)
  tokens = np.array([5, 17, 90, 3, 42, 8, 11, 77, 23, 64], np.int32)
  positions = np.arange(len(tokens))[None]
  ours = np.asarray(transformer.apply(cfg, params, tokens[None], positions,
                                      np.ones_like(positions)))[0]
  reference = _batgpt_reference_logits(str(tmp_path / "hf"), tokens)
  assert np.abs(reference).max() > 1.0
  np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0)
