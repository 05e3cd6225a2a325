"""The on-device engine equals the full forward pass and the per-token host loop it replaced.

`_host_loop_ids` below is a faithful copy of the loop `batgpt generate` ran before the engine
(one jitted step per token, the choice brought to the host each time): the oracle for "greedy
output identical to today's generate", and the negative control of the transfer-guard test.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from testlib import mesh_config
from batgpt_jax import parallel
from batgpt_jax.data import vocab
from batgpt_jax.model import transformer
from batgpt_jax.sample import engine, host_loop

PROMPTS = [[3, 50, 60, 70, 80, 90, 100], [4, 11], [3, 200, 201, 202]]
# The tests share these settings (and PROMPTS' shapes), so the engine compiles few programs.
GREEDY = engine.SamplingConfig(max_new_tokens=10, stop_ids=())
HOT = engine.SamplingConfig(max_new_tokens=10, stop_ids=(), temperature=1.3, seed=3)
FILTERED = engine.SamplingConfig(max_new_tokens=10, stop_ids=(), temperature=0.7, top_k=50,
                                 top_p=0.9, seed=4)


# --- the engine -----------------------------------------------------------------------------

_decode = jax.jit(transformer.decode, static_argnums=0)


def test_cached_decoding_equals_full_forward_at_every_position(model, full_logits):
  cfg, params = model
  rows = [np.arange(3, 23) * 7 % 400, np.arange(5, 17) * 13 % 400]  # lengths 20 and 12
  width, slots = 20, 24
  tokens = np.zeros((2, width), np.int32)
  for r, row in enumerate(rows):
    tokens[r, width - len(row):] = row
  start = jnp.asarray([width - len(row) for row in rows])
  cache = transformer.init_cache(cfg, 2, slots)
  got, index = [], 0
  for chunk in (7, 1, 5, 1, 1, 5):  # a prefill, then steps of one and a few tokens
    part = jnp.asarray(tokens[:, index:index + chunk])
    positions = jnp.maximum(index + jnp.arange(chunk)[None] - start[:, None], 0)
    logits, cache = _decode(cfg, params, part, positions, cache, index, start)
    got.append(np.asarray(logits))
    index += chunk
  got = np.concatenate(got, axis=1)  # [2, width, vocab]
  for r, row in enumerate(rows):
    np.testing.assert_allclose(got[r, width - len(row):], full_logits(cfg, params, row),
                               atol=1e-5, rtol=0)


def test_greedy_equals_todays_loop_and_the_full_forward_argmax(batgpt_model, full_logits):
  cfg, params = batgpt_model
  got = engine.generate_ids(cfg, params, PROMPTS, GREEDY)
  assert [len(out) for out in got] == [10, 10, 10]
  assert got == host_loop.host_loop_ids(cfg, params, PROMPTS, GREEDY)
  for prompt, out in zip(PROMPTS, got):
    seq = list(prompt)
    for _ in range(10):
      seq.append(int(np.argmax(full_logits(cfg, params, seq)[-1])))
    assert out == seq[len(prompt):]  # each row as if alone: its padding and batch-mates unseen


def test_sampling_equals_todays_loop_and_follows_its_settings(batgpt_model):
  cfg, params = batgpt_model
  ids = lambda sampling: engine.generate_ids(cfg, params, PROMPTS, sampling)
  for sampling in (HOT, FILTERED):
    assert ids(sampling) == host_loop.host_loop_ids(cfg, params, PROMPTS, sampling)
  assert ids(HOT) == ids(HOT)
  assert ids(HOT) != ids(dataclasses.replace(HOT, seed=5))


@pytest.mark.parametrize("sampling", [GREEDY, FILTERED], ids=["greedy", "filtered"])
def test_logprobs_equal_log_softmax_of_the_full_forward_pass(batgpt_model, full_logits,
                                                             sampling):
  cfg, params = batgpt_model
  out = engine.sample(cfg, params, PROMPTS, sampling)
  assert out.tokens.shape == out.logprobs.shape == (3, 10)
  for row, prompt in enumerate(PROMPTS):
    new = out.tokens[row].tolist()
    logits = full_logits(cfg, params, prompt + new)[len(prompt) - 1:-1]  # [10, vocab]
    # the distribution before top-k / top-p, at the sampling temperature (1 when greedy)
    want = jax.nn.log_softmax(logits / (sampling.temperature or 1.0), axis=-1)
    np.testing.assert_allclose(out.logprobs[row], want[np.arange(10), new], atol=1e-5, rtol=0)


def test_each_row_stops_at_its_own_stop_tokens(batgpt_model):
  cfg, params = batgpt_model
  free = engine.generate_ids(cfg, params, PROMPTS, GREEDY)
  first_new = lambda row, at: next(t for t in free[row][at:] if t not in free[row][:at])
  stop0, stop1 = first_new(0, 3), first_new(1, 5)  # row 0 stops after 3+ tokens, row 1 after 5+
  cut0, cut1 = free[0].index(stop0), free[1].index(stop1)
  out = engine.sample(cfg, params, PROMPTS, GREEDY, stop_ids=[(stop0,), (stop1,), ()])
  assert out.output_ids() == [free[0][:cut0], free[1][:cut1], free[2]]
  assert out.lengths.tolist() == [cut0 + 1, cut1 + 1, 10]  # the stop token is counted ...
  assert out.tokens[0, cut0] == stop0 and out.tokens[1, cut1] == stop1  # ... and returned
  assert out.stopped.tolist() == [True, True, False]
  assert (out.tokens[0, cut0 + 1:] == vocab.PAD_ID).all()
  assert (out.logprobs[0, cut0 + 1:] == 0).all() and (out.logprobs[0, :cut0 + 1] < 0).all()
  # stop ids in the sampling config apply to every row
  shared = engine.generate_ids(cfg, params, PROMPTS, dataclasses.replace(GREEDY,
                                                                        stop_ids=(stop0,)))
  assert shared == [f[:f.index(stop0)] if stop0 in f else f for f in free]


def test_the_loop_ends_when_every_row_has_stopped(batgpt_model):
  cfg, params = batgpt_model
  free = engine.generate_ids(cfg, params, PROMPTS, GREEDY)
  stops = [(free[0][1],), (free[1][2],), (free[2][3],)]
  steps = []

  def count(step, tokens, emitted):
    del tokens, emitted
    steps.append(int(step))

  out = engine.sample(cfg, params, PROMPTS, GREEDY, stop_ids=stops, on_token=count)
  assert out.stopped.all() and int(out.lengths.max()) <= 4
  assert steps == list(range(int(out.lengths.max())))  # not the 10 of max_new_tokens


def test_max_batch_decodes_in_batches_with_the_same_rows(batgpt_model):
  cfg, params = batgpt_model
  whole = engine.sample(cfg, params, PROMPTS, GREEDY)
  parts = engine.sample(cfg, params, PROMPTS, GREEDY, max_batch=2)  # rows 0-1, then 2 (padded)
  for name in ("tokens", "lengths", "stopped"):
    np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
  np.testing.assert_allclose(parts.logprobs, whole.logprobs, atol=1e-6, rtol=0)


def test_prompt_longer_than_the_model_is_refused(batgpt_model):
  cfg, params = batgpt_model
  with pytest.raises(ValueError, match="beyond the model's max_len=1024"):
    engine.generate_ids(cfg, params, [[3] * 1000], engine.SamplingConfig(max_new_tokens=30))
  with pytest.raises(ValueError, match="one tuple of stop ids per prompt"):
    engine.sample(cfg, params, PROMPTS, engine.SamplingConfig(), stop_ids=[(5,)])
  with pytest.raises(ValueError, match="max_batch=0"):
    engine.sample(cfg, params, PROMPTS, engine.SamplingConfig(), max_batch=0)


def test_no_transfer_between_host_and_device_while_decoding(batgpt_model):
  cfg, params = batgpt_model
  tokens = np.zeros((3, 16), np.int32)  # PROMPTS' bucket, as `engine.sample` lays it out
  for row, prompt in enumerate(PROMPTS):
    tokens[row, 16 - len(prompt):] = prompt
  lengths = np.array([len(p) for p in PROMPTS], np.int32)
  args = jax.device_put((tokens, lengths, np.full((3, 4), engine.NO_STOP, np.int32)))
  key = jax.random.key(HOT.seed)
  run = lambda: engine.decode_loop(cfg, params, *args, key, sampling=HOT, slots=64)
  want = jax.block_until_ready(run())  # compiled outside the guard
  with jax.transfer_guard("disallow"):
    out = jax.block_until_ready(run())
  np.testing.assert_array_equal(out.tokens, want.tokens)
  assert out.lengths.tolist() == [10, 10, 10]
  # the guard has teeth: the per-token host loop moves every token across
  with jax.transfer_guard("disallow"), pytest.raises(Exception, match="Disallowed"):
    host_loop.host_loop_ids(cfg, params, PROMPTS, HOT)


def test_mesh_2_2_2_gives_the_output_of_one_device(batgpt_model, axis_rules):
  cfg, params = batgpt_model
  mesh = parallel.mesh_from_config(mesh_config((2, 2, 2)))
  placed = engine.place_params(cfg, params, mesh, axis_rules)
  assert placed["lm_head"].sharding.spec == PartitionSpec("fsdp", "tensor")
  # the KV cache: batch over data and fsdp, KV heads over tensor (the attention's k/v layout)
  cache_shape = (cfg.n_layers, 4, 64, cfg.n_kv_heads, cfg.head_dim)
  assert parallel.logical_to_spec(engine.CACHE_AXES, cache_shape, mesh, axis_rules) == (
      PartitionSpec(None, ("data", "fsdp"), None, "tensor", None))
  # sampled through top-k and top-p (over the vocab sharded on tensor), with stop tokens
  free = engine.sample(cfg, params, PROMPTS, FILTERED).output_ids()
  sampling = dataclasses.replace(FILTERED, stop_ids=(free[0][4], free[2][6]))
  one = engine.sample(cfg, params, PROMPTS, sampling)  # 3 rows: padded to 4 on the mesh
  many = engine.sample(cfg, placed, PROMPTS, sampling, mesh=mesh, rules=axis_rules)
  assert one.stopped[0] and one.stopped[2]
  for name in ("tokens", "lengths", "stopped"):
    np.testing.assert_array_equal(getattr(many, name), getattr(one, name))
  np.testing.assert_allclose(many.logprobs, one.logprobs, atol=1e-5, rtol=0)
