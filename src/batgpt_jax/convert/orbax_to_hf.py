"""Export: an orbax checkpoint step -> a Hugging Face directory in an exact layout.

A reward model (a checkpoint with `reward_head`) is written as the layout's
*ForSequenceClassification instead (reward.py: the head's bias and calibration in config.json).

Tensors are read from the checkpoint one (stacked) parameter at a time and streamed to the
safetensors files, so peak memory stays near our largest parameter, whatever the model size.
"""

import dataclasses
import json
import logging
import os

from tqdm import tqdm

from batgpt_jax import checkpoints
from batgpt_jax.convert import layout, layouts, reward, safetensors_io
from batgpt_jax.convert import tokenizer as hf_tokenizer
from batgpt_jax.data import vocab as vocab_lib

STASH_KEY = "batgpt_jax"  # our full ModelConfig, kept in config.json for an exact round trip


@dataclasses.dataclass
class Exported:
  out_dir: str
  layout: str
  step: int
  files: list[str]


def _special_ids(sp_model_path: str | None) -> dict:
  if sp_model_path is None:
    return {"pad_token_id": vocab_lib.PAD_ID, "eos_token_id": vocab_lib.EOS_ID,
            "bos_token_id": None}
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=sp_model_path)
  none_if_absent = lambda i: i if i >= 0 else None
  return {"pad_token_id": none_if_absent(sp.pad_id()), "eos_token_id": none_if_absent(sp.eos_id()),
          "bos_token_id": none_if_absent(sp.bos_id())}


def export(checkpoint: str, out_dir: str, *, step: int | None = None,
           layout_name: str | None = None, dtype: str | None = None,
           max_shard_bytes: int = 2 << 30, sp_model_path: str | None = None,
           progress: bool = True, overwrite: bool = False) -> Exported:
  """Writes config.json, generation_config.json, safetensors (+ index) and tokenizer files.

  Refuses (before writing anything) an `out_dir` holding any file it would write, unless
  `overwrite`; then those files and any older safetensors shards are replaced.
  """
  checkpoints_dir, step = checkpoints.find_step(checkpoint, step)
  cfg, _ = checkpoints.read_config(checkpoints_dir, step)
  saved = checkpoints.param_shapes(checkpoints_dir, step)
  is_reward = reward.is_reward(saved)
  target = (reward.layout_for if is_reward else layouts.layout_for)(cfg, layout_name)
  dtype = dtype or cfg.param_dtype
  if dtype not in safetensors_io.DTYPES:
    raise ValueError(f"dtype {dtype!r}; expected one of {sorted(safetensors_io.DTYPES)}")

  expected = layout.our_shapes(cfg, (reward.HEAD,) if is_reward else ())
  if {path: shape for path, (shape, _) in saved.items()} != expected:
    raise ValueError(f"The parameters in {checkpoints_dir}/{step} do not have the shapes of its "
                     "own saved model config (a decoder, or a decoder and a reward head); the "
                     "checkpoint is damaged or was edited.")
  tensors = target.tensors(cfg)
  if is_reward:
    tensors = reward.tensors(tensors)
  shapes = layout.hf_shapes(cfg, tensors)

  writer_files = safetensors_io.shard_file_names(shapes, dtype, max_shard_bytes)
  _clear_outputs(out_dir, writer_files + [safetensors_io.INDEX_NAME] + list(CONFIG_OUTPUTS)
                 + (list(TOKENIZER_OUTPUTS) if sp_model_path is not None else []), overwrite)
  # config.json before the tensors: what it refuses (a classifier with no pad id) writes nothing.
  special = _special_ids(sp_model_path)
  config = target.hf_config(cfg, dtype, special)
  if is_reward:
    bias = checkpoints.read_param_arrays(checkpoints_dir, step, [reward.HEAD + "/output_bias"],
                                         saved)[reward.HEAD + "/output_bias"]
    config = reward.hf_config(config, target, float(bias),
                              checkpoints.read_calibration(checkpoints_dir, step))
  config[STASH_KEY] = {"model": cfg.to_dict(), "layout": target.NAME, "step": step}

  os.makedirs(out_dir, exist_ok=True)
  writer = safetensors_io.ShardedWriter(out_dir, shapes, dtype, max_shard_bytes)
  loaded: dict = {}
  bar = tqdm(total=len(shapes), unit="tensor", desc=f"export {target.NAME}", disable=not progress)
  for k, tensor in enumerate(tensors):
    still_needed = {s for later in tensors[k:] for s in later.sources}
    for path in [p for p in loaded if p not in still_needed]:
      del loaded[path]  # free each parameter as soon as no later tensor uses it
    loaded.update(checkpoints.read_param_arrays(
        checkpoints_dir, step, [s for s in tensor.sources if s not in loaded], saved))
    for i, name in enumerate(tensor.names(cfg.n_layers)):
      parts = [loaded[s][i] if tensor.per_layer else loaded[s] for s in tensor.sources]
      writer.write(name, tensor.to_hf(*parts))
      bar.update()
  bar.close()
  loaded.clear()
  files = writer.close()

  _write_json(os.path.join(out_dir, "config.json"), config)
  files.append("config.json")
  if not is_reward:  # a sequence classifier does not generate
    _write_json(os.path.join(out_dir, "generation_config.json"),
                {**special, "do_sample": False, "max_length": cfg.max_len})
    files.append("generation_config.json")
  if sp_model_path is not None:
    files += hf_tokenizer.write_hf_tokenizer(sp_model_path, out_dir, model_max_length=cfg.max_len)
  else:
    logging.warning("No tokenizer given: %s has weights and config but no tokenizer files.",
                    out_dir)
  return Exported(out_dir=out_dir, layout=target.NAME, step=step, files=files)


CONFIG_OUTPUTS = ("config.json", "generation_config.json")
TOKENIZER_OUTPUTS = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "tokenizer.model")  # what convert/tokenizer.py writes


def _clear_outputs(out_dir: str, names: list[str], overwrite: bool) -> None:
  """Refuses to replace existing files unless `overwrite`; then removes them and old shards."""
  if not os.path.isdir(out_dir):
    return
  shards = [f for f in os.listdir(out_dir) if f.startswith("model") and
            f.endswith(".safetensors")]
  existing = sorted({f for f in names if os.path.exists(os.path.join(out_dir, f))} | set(shards))
  if existing and not overwrite:
    raise FileExistsError(f"{out_dir} already holds {', '.join(existing)}; export into a new or "
                          "empty directory, or pass --overwrite to replace them.")
  for name in existing:
    os.remove(os.path.join(out_dir, name))


def _write_json(path: str, value: dict) -> None:
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2, ensure_ascii=False)
    f.write("\n")
