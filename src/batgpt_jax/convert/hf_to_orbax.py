"""Import: a Hugging Face directory (llama, qwen2 or batgpt safetensors) -> a run directory.

The run directory holds checkpoints/0 (the weights, a fresh optimizer state, step 0) and
model.gin (the ModelConfig bindings), ready for `batgpt train` / `batgpt eval`. HF tensors are
read one at a time into our stacked parameters; every name and shape is checked first. A
*ForSequenceClassification with one label becomes a reward run (reward.py); its calibration
stays in config.json, so `batgpt reward score` on the imported run writes raw rewards.
"""

import dataclasses
import os

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from batgpt_jax import checkpoints
from batgpt_jax.convert import layout, layouts, reward, safetensors_io
from batgpt_jax.convert.orbax_to_hf import STASH_KEY
from batgpt_jax.model.config import ROPE_SCALING_FIELDS, ModelConfig, field_defaults
from batgpt_jax.train import state as train_state

_ARCHITECTURE_FIELDS = ("vocab_size", "hidden", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                        "ffn", "rope_fraction", "rope_style", "rope_base", "norm_eps", "qkv_bias",
                        *ROPE_SCALING_FIELDS)
_DEFAULTS = field_defaults()


@dataclasses.dataclass
class Imported:
  run_dir: str
  layout: str
  model_cfg: ModelConfig
  gin_path: str


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(path):
    found = sorted(os.listdir(hf_dir))[:20] if os.path.isdir(hf_dir) else "it does not exist"
    raise FileNotFoundError(f"No config.json in {hf_dir} (found: {found}); point the import at "
                            "a Hugging Face model directory.")
  return safetensors_io.read_json(path)


def model_config(hf: dict, layout_name: str | None, base: ModelConfig,
                 dtype: str | None) -> tuple[ModelConfig, object]:
  """(our ModelConfig, layout module) for a config.json; non-architecture fields from `base`."""
  model_type = hf.get("model_type")
  name = layout_name or model_type
  if name not in layouts.LAYOUTS:
    raise layout.LayoutError(f"config.json has model_type {model_type!r}, which is none of the "
                             f"supported layouts {sorted(layouts.LAYOUTS)}.")
  if layout_name and model_type and model_type != layout_name:
    raise layout.LayoutError(f"--layout={layout_name} but config.json says model_type "
                             f"{model_type!r}; drop the flag or use the matching layout.")
  target = layouts.LAYOUTS[name]
  fields = target.model_fields(hf)
  stash = (hf.get(STASH_KEY) or {}).get("model")
  architecture = {k: fields[k] for k in _ARCHITECTURE_FIELDS}
  if stash and all(stash.get(k, _DEFAULTS[k]) == v for k, v in architecture.items()):
    # written by our export: keep every field as it was (one the export predates: its default)
    base = ModelConfig.from_dict({**architecture, **stash})
    fields = {}
  try:
    cfg = dataclasses.replace(base, **fields)
  except ValueError as err:
    raise layout.LayoutError(f"config.json describes a model that ModelConfig refuses: {err}") \
        from None
  if dtype is not None:
    cfg = dataclasses.replace(cfg, param_dtype=dtype)
  return cfg, target


def import_hf(hf_dir: str, run_dir: str, *, layout_name: str | None = None,
              dtype: str | None = None, base_cfg: ModelConfig | None = None,
              opt_cfg: train_state.OptimizerConfig | None = None,
              progress: bool = True) -> Imported:
  checkpoints.ensure_new_run_dir(run_dir)
  hf = read_hf_config(hf_dir)
  cfg, target = model_config(hf, layout_name, base_cfg or ModelConfig(), dtype)
  tensors = target.tensors(cfg)
  is_reward = reward.is_sequence_classification(hf)
  if is_reward:
    output_bias = reward.import_checks(hf, target.NAME)
    tensors = reward.tensors(tensors)
  expected = layout.hf_shapes(cfg, tensors)
  tied = bool(hf.get("tie_word_embeddings", False)) and not is_reward
  embed_name = next(t.name for t in tensors if t.sources == ("embed/embedding",))
  if tied:
    del expected["lm_head.weight"]  # the output projection is the embedding, transposed
  reader = safetensors_io.SafetensorsReader(hf_dir)
  layout.check_tensor_set(reader.shapes(), expected, hf_dir, target.NAME)

  ours = layout.our_shapes(cfg, (reward.HEAD,) if is_reward else ())
  params: dict = {}
  bar = tqdm(total=len(expected), unit="tensor", desc=f"import {target.NAME}",
             disable=not progress)
  for tensor in tensors:
    outs = [np.empty(ours[s], cfg.params_dtype) for s in tensor.sources]
    for i, name in enumerate(tensor.names(cfg.n_layers)):
      source = embed_name if (tied and name == "lm_head.weight") else name
      for out, part in zip(outs, tensor.from_hf(reader.get(source))):
        if tensor.per_layer:
          out[i] = part
        else:
          out[...] = part
      if not (tied and name == "lm_head.weight"):
        bar.update()
    for path, out in zip(tensor.sources, outs):
      layout.set_param(params, path, jnp.asarray(out))
  bar.close()
  if is_reward:
    # The classifier has no LM head; the embedding, transposed, keeps the decoder whole.
    params["lm_head"] = params["embed"]["embedding"].T
    params[reward.HEAD]["output_bias"] = jnp.asarray(output_bias, cfg.params_dtype)
  header = (f"Imported from {os.path.abspath(hf_dir)} ({target.NAME} layout) by "
            "`batgpt convert import`.\nUse it with --gin_file=<this file> "
            f"--gin.TrainConfig.run_dir=\"'{os.path.abspath(run_dir)}'\"")
  gin_path = checkpoints.write_run_dir(run_dir, cfg, params,
                                         opt_cfg or train_state.OptimizerConfig(), header)
  return Imported(run_dir=os.path.abspath(run_dir), layout=target.NAME, model_cfg=cfg,
                  gin_path=gin_path)
