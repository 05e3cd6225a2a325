"""The streaming safetensors writer: standard files, shards with an index, one tensor at a time."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from batgpt_jax.convert import safetensors_io


def _tensors():
  rng = np.random.default_rng(0)
  return {"a": rng.normal(size=(4, 8)).astype(np.float32),
          "b.weight": rng.normal(size=(3,)).astype(np.float32),
          "c": rng.normal(size=(16, 16)).astype(np.float32),
          "d": rng.normal(size=(2, 2, 2)).astype(np.float32)}


def _write(directory, tensors, dtype="float32", max_shard_bytes=1 << 30):
  writer = safetensors_io.ShardedWriter(str(directory), {k: v.shape for k, v in tensors.items()},
                                        dtype, max_shard_bytes)
  for name, value in tensors.items():
    writer.write(name, value)
  return writer.close()


def test_single_file_reads_back_with_safetensors(tmp_path):
  tensors = _tensors()
  assert _write(tmp_path, tensors) == ["model.safetensors"]
  with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
    assert sorted(f.keys()) == sorted(tensors)
    for name, value in tensors.items():
      np.testing.assert_array_equal(f.get_tensor(name), value)


def test_shards_and_index(tmp_path):
  tensors = _tensors()
  files = _write(tmp_path, tensors, max_shard_bytes=200)  # 'c' (1 KiB) gets a shard of its own
  assert files[-1] == safetensors_io.INDEX_NAME and len(files) == 4
  index = json.loads((tmp_path / safetensors_io.INDEX_NAME).read_text())
  assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())
  assert index["weight_map"]["c"] == "model-00002-of-00003.safetensors"
  reader = safetensors_io.SafetensorsReader(str(tmp_path))
  assert reader.shapes() == {k: v.shape for k, v in tensors.items()}
  for name, value in tensors.items():
    np.testing.assert_array_equal(reader.get(name), value)


def test_bfloat16(tmp_path):
  tensors = _tensors()
  _write(tmp_path, tensors, dtype="bfloat16")
  reader = safetensors_io.SafetensorsReader(str(tmp_path))
  assert reader.dtype("a") == "BF16"
  np.testing.assert_array_equal(reader.get("a"), tensors["a"].astype(ml_dtypes.bfloat16))


def test_writer_checks_order_shape_and_completeness(tmp_path):
  tensors = _tensors()
  writer = safetensors_io.ShardedWriter(str(tmp_path), {k: v.shape for k, v in tensors.items()},
                                        "float32", 1 << 20)
  with pytest.raises(RuntimeError, match="expected a, got c"):
    writer.write("c", tensors["c"])
  with pytest.raises(ValueError, match=r"a: planned shape \[4, 8\], got \[8, 4\]"):
    writer.write("a", tensors["a"].T)
  writer.write("a", tensors["a"])
  with pytest.raises(RuntimeError, match="Only 1 of 4 tensors were written; the first missing "
                                         "one is b.weight"):
    writer.close()


def test_reader_names_what_is_missing(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(FileNotFoundError, match=r"No model.safetensors .*\['config.json'\]"):
    safetensors_io.SafetensorsReader(str(tmp_path))
  _write(tmp_path, _tensors(), max_shard_bytes=200)
  (tmp_path / "model-00003-of-00003.safetensors").unlink()
  with pytest.raises(FileNotFoundError, match="model-00003-of-00003.safetensors"):
    safetensors_io.SafetensorsReader(str(tmp_path))
