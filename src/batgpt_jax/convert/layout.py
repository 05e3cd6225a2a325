"""What a Hugging Face layout is made of, and the checks shared by every layout.

A layout (llama.py, qwen2.py, batgpt.py) is a module with:
  NAME: its `model_type`;
  problems(cfg) -> list[str]: why our ModelConfig cannot be written in it exactly (empty: it can);
  hf_config(cfg, dtype, special_ids) -> dict: its config.json;
  model_fields(hf: dict) -> dict: the ModelConfig fields that its config.json fixes (raises
    `LayoutError` naming each setting that our model cannot represent);
  tensors(cfg) -> list[Tensor]: how each of its tensors is made from our parameters.
Our parameters are the pure dict of transformer.py, stacked on a leading layers axis:
q [hidden, heads, head_dim], k/v [hidden, kv_heads, head_dim], o [heads, head_dim, hidden],
gate/up [hidden, ffn], down [ffn, hidden], embedding [vocab, hidden], lm_head [hidden, vocab];
a reward model adds reward_head {kernel [hidden], output_bias []} (reward.py).
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from batgpt_jax.model.config import ModelConfig


class LayoutError(ValueError):
  """A model config, or a set of tensors, does not fit the requested layout."""


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One Hugging Face tensor (per layer when `name` holds '{i}') and how it maps to ours.

  to_hf takes our arrays named by `sources` (one layer's slice for per-layer tensors) and gives
  the HF array; from_hf is its inverse and gives a tuple, one array per source.
  """

  name: str
  sources: tuple[str, ...]  # our parameter paths, e.g. 'blocks/attn/q'
  to_hf: Callable[..., np.ndarray]
  from_hf: Callable[[np.ndarray], tuple[np.ndarray, ...]]

  @property
  def per_layer(self) -> bool:
    return "{i}" in self.name

  def names(self, n_layers: int) -> list[str]:
    return [self.name.format(i=i) for i in range(n_layers)] if self.per_layer else [self.name]


def concat(*arrays):
  """Concatenation on the first axis for numpy data and for traced shapes alike."""
  if any(isinstance(a, jax.core.Tracer) for a in arrays):
    return jnp.concatenate(arrays, axis=0)
  return np.concatenate(arrays, axis=0)


def param(params: dict, path: str):
  node = params
  for key in path.split("/"):
    node = node[key]
  return node


def set_param(params: dict, path: str, value) -> None:
  *parents, leaf = path.split("/")
  node = params
  for key in parents:
    node = node.setdefault(key, {})
  node[leaf] = value


def our_shapes(cfg: ModelConfig, head_names=()) -> dict[str, tuple[int, ...]]:
  """Each parameter path of the model (and of the named heads) and its (stacked) shape."""
  from batgpt_jax.model import heads  # pylint: disable=import-outside-toplevel
  flat = jax.tree_util.tree_flatten_with_path(heads.abstract_params(cfg, head_names))[0]
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape) for path, leaf in flat}


def hf_shapes(cfg: ModelConfig, tensors: list[Tensor]) -> dict[str, tuple[int, ...]]:
  """The shape of every HF tensor, in the order the tensors are written."""
  from batgpt_jax.model import heads  # pylint: disable=import-outside-toplevel
  shapes = our_shapes(cfg, heads.HEADS)  # a tensor may come from a head (reward.py)
  out = {}
  for tensor in tensors:
    inputs = [jax.ShapeDtypeStruct(shapes[s][1:] if tensor.per_layer else shapes[s], jnp.float32)
              for s in tensor.sources]
    shape = tuple(jax.eval_shape(tensor.to_hf, *inputs).shape)
    for name in tensor.names(cfg.n_layers):
      out[name] = shape
  return out


def check_tensor_set(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                     where: str, layout_name: str) -> None:
  """Raises `LayoutError` listing missing, unexpected and mis-shaped tensors."""
  missing = [n for n in expected if n not in found]
  extra = sorted(n for n in found if n not in expected)
  misshaped = [f"{n}: expected {list(expected[n])}, found {list(found[n])}"
               for n in expected if n in found and tuple(found[n]) != tuple(expected[n])]
  if not (missing or extra or misshaped):
    return
  parts = [f"The tensors in {where} do not match the {layout_name} layout of its config.json:"]
  for title, items in (("missing", missing), ("unexpected", extra), ("wrong shape", misshaped)):
    if items:
      shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
      parts.append(f"  {title} ({len(items)}): " + ", ".join(shown))
  parts.append("Check that config.json belongs to these weights and names the right "
               "model_type (or --layout).")
  raise LayoutError("\n".join(parts))


def refuse(layout_name: str, problems: list[str]) -> None:
  if problems:
    raise LayoutError(f"This model cannot be written exactly as {layout_name!r}:\n  - "
                      + "\n  - ".join(problems))
