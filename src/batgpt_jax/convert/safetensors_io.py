"""Safetensors files written one tensor at a time, sharded with an index; and lazy reading.

The writer plans every shard's header from the tensor shapes first, then streams each tensor to
disk as it comes, so peak memory is one tensor, not one shard. Files are the standard format
(8-byte little-endian header size, JSON header, raw little-endian data), readable by the
`safetensors` library and transformers. Reading goes through `safetensors.safe_open`, which maps
the file and copies out only the tensor asked for.
"""

import json
import os
import struct
import sys

import ml_dtypes
import numpy as np

from batgpt_jax import config

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
DTYPES = {"float32": ("F32", np.dtype(np.float32)),
          "bfloat16": ("BF16", np.dtype(ml_dtypes.bfloat16)),
          "float16": ("F16", np.dtype(np.float16))}
_ALIGN = 8  # the header is padded so that the data starts 8-byte aligned

assert sys.byteorder == "little", "safetensors data is little-endian"


def _nbytes(shape, dtype: np.dtype) -> int:
  return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def plan_shards(shapes: dict[str, tuple], dtype: str, max_shard_bytes: int) -> list[list[str]]:
  """Tensor names grouped into shards of at most `max_shard_bytes` (a bigger tensor alone)."""
  item = DTYPES[dtype][1]
  shards, current, size = [], [], 0
  for name, shape in shapes.items():
    n = _nbytes(shape, item)
    if current and size + n > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(name)
    size += n
  if current or not shards:
    shards.append(current)
  return shards


def shard_file_names(shapes: dict[str, tuple], dtype: str, max_shard_bytes: int) -> list[str]:
  """The safetensors file names that a writer of these tensors creates."""
  total = len(plan_shards(shapes, dtype, max_shard_bytes))
  return [SINGLE_NAME] if total == 1 else [
      f"model-{k + 1:05d}-of-{total:05d}.safetensors" for k in range(total)]


class ShardedWriter:
  """Writes tensors, in the order of `shapes`, to model.safetensors or N shards plus an index."""

  def __init__(self, out_dir: str, shapes: dict[str, tuple], dtype: str, max_shard_bytes: int):
    self.out_dir, self.shapes = out_dir, {k: tuple(v) for k, v in shapes.items()}
    self.code, self.dtype = DTYPES[dtype]
    shards = plan_shards(self.shapes, dtype, max_shard_bytes)
    self.files = shard_file_names(self.shapes, dtype, max_shard_bytes)
    self.weight_map = {name: self.files[k] for k, names in enumerate(shards) for name in names}
    self._order = [name for names in shards for name in names]
    self._shards = shards
    self._next = 0
    self._file = None
    self._file_index = -1
    self.total_size = sum(_nbytes(s, self.dtype) for s in self.shapes.values())
    os.makedirs(out_dir, exist_ok=True)

  def _open_shard(self, k: int) -> None:
    if self._file is not None:
      self._file.close()
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in self._shards[k]:
      n = _nbytes(self.shapes[name], self.dtype)
      header[name] = {"dtype": self.code, "shape": list(self.shapes[name]),
                      "data_offsets": [offset, offset + n]}
      offset += n
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    path = os.path.join(self.out_dir, self.files[k])
    self._file = open(path, "wb")  # pylint: disable=consider-using-with
    self._file.write(struct.pack("<Q", len(text)) + text)
    self._file_index = k

  def write(self, name: str, array) -> None:
    if self._next >= len(self._order) or self._order[self._next] != name:
      expected = self._order[self._next] if self._next < len(self._order) else "nothing"
      raise RuntimeError(f"Tensors must be written in plan order: expected {expected}, got {name}")
    array = np.asarray(array)
    if tuple(array.shape) != self.shapes[name]:
      raise ValueError(f"{name}: planned shape {list(self.shapes[name])}, got {list(array.shape)}")
    k = self.files.index(self.weight_map[name])
    if k != self._file_index:
      self._open_shard(k)
    data = np.ascontiguousarray(array.astype(self.dtype, copy=False))
    self._file.write(data.reshape(-1).view(np.uint8).data)
    self._next += 1

  def close(self) -> list[str]:
    """Finishes the files; writes the index when there are several shards. Returns file names."""
    if self._next != len(self._order):
      raise RuntimeError(f"Only {self._next} of {len(self._order)} tensors were written; the "
                         f"first missing one is {self._order[self._next]}.")
    if not self._order:  # no tensors at all: still a valid (empty) file
      self._open_shard(0)
    self._file.close()
    if len(self.files) == 1:
      return list(self.files)
    with open(os.path.join(self.out_dir, INDEX_NAME), "w", encoding="utf-8") as f:
      json.dump({"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map}, f,
                indent=2)
    return list(self.files) + [INDEX_NAME]


def read_json(path: str) -> dict:
  """A JSON object from a file, or an InputError naming the file, the line and the column."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as err:
    raise config.InputError(f"{path} is not valid JSON ({err}); fix or re-create the file.") \
        from None
  if not isinstance(value, dict):
    raise config.InputError(f"{path} holds a JSON {type(value).__name__}, expected an object.")
  return value


class SafetensorsReader:
  """The tensors of a Hugging Face directory (one model.safetensors, or shards and an index)."""

  def __init__(self, directory: str):
    # pylint: disable-next=import-outside-toplevel
    from safetensors import SafetensorError, safe_open
    index = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index):
      weight_map = read_json(index).get("weight_map")
      if not isinstance(weight_map, dict):
        raise config.InputError(f"{index}: no 'weight_map' object mapping tensor names to shard "
                                "files; re-save the model with save_pretrained.")
      files = sorted(set(weight_map.values()))
    elif os.path.exists(os.path.join(directory, SINGLE_NAME)):
      files, weight_map = [SINGLE_NAME], None
    else:
      found = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
      raise FileNotFoundError(
          f"No {SINGLE_NAME} or {INDEX_NAME} in {directory} (found: {found[:20]}). Point the "
          "import at a Hugging Face model directory saved with safe_serialization.")
    absent = [f for f in files if not os.path.exists(os.path.join(directory, f))]
    if absent:
      raise FileNotFoundError(f"{INDEX_NAME} in {directory} names shards that are missing: "
                              f"{absent}")
    self._handles = {}
    for f in files:
      path = os.path.join(directory, f)
      try:
        self._handles[f] = safe_open(path, framework="numpy")
      except SafetensorError as err:  # truncated, or not safetensors at all
        raise config.InputError(f"{path} is not a readable safetensors file ({err}); it is "
                                "probably truncated: download or copy it again.") from None
    self.location = {}
    for f, handle in self._handles.items():
      for name in handle.keys():
        self.location[name] = f
    if weight_map is not None:
      unlisted = sorted(n for n, f in weight_map.items() if self.location.get(n) != f)
      if unlisted:
        raise ValueError(f"{INDEX_NAME} in {directory} lists tensors that its shards do not "
                         f"hold: {unlisted[:20]}")

  def shapes(self) -> dict[str, tuple[int, ...]]:
    return {name: tuple(self._handles[f].get_slice(name).get_shape())
            for name, f in self.location.items()}

  def dtype(self, name: str) -> str:
    return self._handles[self.location[name]].get_slice(name).get_dtype()

  def get(self, name: str) -> np.ndarray:
    return self._handles[self.location[name]].get_tensor(name)
