"""KV-cache decoding equals the full forward pass; sampling, stopping, directions, chat, CLI."""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax import checkpoints, generate
from batgpt_jax.data import chat
from batgpt_jax.data import vocab
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import state as train_state

CONFIGS = {
    "batgpt": ModelConfig(vocab_size=400, rope_style="interleaved", rope_fraction=0.5,
                          init_std=0.2),
    "llama": ModelConfig(vocab_size=400, rope_style="half_split", rope_fraction=1.0,
                         qkv_bias=False, n_kv_heads=1, init_std=0.2),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def model(request):
  cfg = CONFIGS[request.param]
  flat, treedef = jax.tree_util.tree_flatten_with_path(transformer.abstract_params(cfg))
  keys = jax.random.split(jax.random.key(1), len(flat))
  # random weights, gains around 1, non-zero biases: logits of order one
  params = treedef.unflatten([
      float(str(path[-1].key) == "scale") + 0.15 * jax.random.normal(key, x.shape, x.dtype)
      for (path, x), key in zip(flat, keys)])
  return cfg, params


@functools.partial(jax.jit, static_argnums=0)
def _forward(cfg, params, tokens):
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return transformer.apply(cfg, params, tokens, positions, jnp.ones_like(tokens))


def _full_logits(cfg, params, tokens, length: int = 32) -> np.ndarray:
  """Logits of `tokens` alone, run at a fixed padded length (causal: the tail cannot matter)."""
  padded = np.zeros((1, length), np.int32)
  padded[0, :len(tokens)] = tokens
  return np.asarray(_forward(cfg, params, jnp.asarray(padded)))[0, :len(tokens)]


_decode = jax.jit(transformer.decode, static_argnums=0)


def test_cached_decoding_equals_full_forward_at_every_position(model):
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
    want = _full_logits(cfg, params, row)
    np.testing.assert_allclose(got[r, width - len(row):], want, atol=1e-5, rtol=0)


def test_batched_generation_equals_one_by_one(model):
  cfg, params = model
  prompts = [[3, 50, 60, 70, 80, 90, 100], [4, 11], [3, 200, 201, 202]]
  sampling = generate.SamplingConfig(max_new_tokens=12, stop_ids=())
  together = generate.generate_ids(cfg, params, prompts, sampling)
  assert [len(out) for out in together] == [12, 12, 12]
  assert together == [generate.generate_ids(cfg, params, [p], sampling)[0] for p in prompts]
  # greedy by hand, with the full forward pass, for the first prompt
  seq = list(prompts[0])
  for _ in range(12):
    seq.append(int(np.argmax(_full_logits(cfg, params, seq)[-1])))
  assert together[0] == seq[len(prompts[0]):]


def test_sampling_settings(model):
  cfg, params = model
  prompts = [[3, 10, 20], [4, 30]]
  greedy = generate.generate_ids(cfg, params, prompts,
                                 generate.SamplingConfig(max_new_tokens=8, stop_ids=()))
  hot = lambda **kw: generate.generate_ids(cfg, params, prompts, generate.SamplingConfig(
      max_new_tokens=8, stop_ids=(), temperature=1.5, **kw))
  assert hot(seed=1) == hot(seed=1)
  assert hot(seed=1) != hot(seed=2)
  assert hot(seed=5, top_k=1) == greedy
  assert hot(seed=5, top_p=1e-6) == greedy


def test_filter_logits():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()
  assert kept(generate.filter_logits(logits, top_k=2, top_p=1.0)) == [True, True, False, False]
  assert kept(generate.filter_logits(logits, top_k=0, top_p=0.5)) == [True, False, False, False]
  assert kept(generate.filter_logits(logits, top_k=0, top_p=0.7)) == [True, True, False, False]
  assert kept(generate.filter_logits(logits, top_k=0, top_p=0.9)) == [True, True, True, False]
  with pytest.raises(ValueError, match="top_p=0.0"):
    generate.SamplingConfig(top_p=0.0)


def test_stop_tokens(model):
  cfg, params = model
  prompts = [[3, 10, 20], [4, 30]]
  free = generate.generate_ids(cfg, params, prompts,
                               generate.SamplingConfig(max_new_tokens=10, stop_ids=()))
  stop = free[0][3]
  assert stop not in free[0][:3]
  stopped = generate.generate_ids(cfg, params, prompts,
                                  generate.SamplingConfig(max_new_tokens=10, stop_ids=(stop,)))
  assert stopped[0] == free[0][:3]  # the stop token itself is not returned
  cut = free[1].index(stop) if stop in free[1] else 10
  assert stopped[1] == free[1][:cut]


def test_prompt_longer_than_the_model_is_refused(model):
  cfg, params = model
  with pytest.raises(ValueError, match="beyond the model's max_len=1024"):
    generate.generate_ids(cfg, params, [[3] * 1000], generate.SamplingConfig(max_new_tokens=30))


def test_directions(data_tiny_vocab):
  l2r_id, r2l_id = vocab.direction_ids(data_tiny_vocab)
  text = "The cat sees a bird."
  ids = [int(i) for i in data_tiny_vocab.encode(text)]
  assert generate.prompt_ids(data_tiny_vocab, text, "l2r") == [l2r_id] + ids
  assert generate.prompt_ids(data_tiny_vocab, text, "r2l") == [r2l_id] + ids[::-1]
  assert generate.output_text(data_tiny_vocab, ids[::-1], "r2l") == text
  assert generate.output_text(data_tiny_vocab, ids, "l2r") == text


def test_generate_text_in_both_directions(model, data_tiny_vocab):
  cfg, params = model
  sampling = generate.SamplingConfig(max_new_tokens=6, stop_ids=())
  for direction in ("l2r", "r2l"):
    texts = generate.generate_text(cfg, params, data_tiny_vocab, ["The cat", "今天天气"], sampling,
                                   direction=direction)
    prompts = [generate.prompt_ids(data_tiny_vocab, t, direction) for t in ["The cat", "今天天气"]]
    ids = generate.generate_ids(cfg, params, prompts, sampling)
    assert texts == [generate.output_text(data_tiny_vocab, i, direction) for i in ids]


def test_chat_template():
  assert chat.chat_prompt("How are you?") == "[Turn 1]\n\n[User] How are you?\n\n[Assistant]"
  assert chat.chat_prompt("And now?", history=[("Hi", "Hello!")], system="Be brief.") == (
      "[System]\n\n Be brief.\n\n<eot>"
      "[Turn 1]\n\n[User] Hi\n\n[Assistant] Hello!\n\n<eop>"
      "[Turn 2]\n\n[User] And now?\n\n[Assistant]")


def test_generate_command(model, data_tiny_vocab_path, tmp_path, capsys):
  cfg, params = model
  checkpoints.write_run_dir(str(tmp_path / "run"), cfg, params, train_state.OptimizerConfig())
  parser = argparse.ArgumentParser(prog="batgpt")
  generate.add_generate_command(parser.add_subparsers(dest="command", required=True))
  common = ["generate", f"--checkpoint={tmp_path}/run", f"--vocab={data_tiny_vocab_path}",
            "--max_new_tokens=5"]
  args = parser.parse_args(common + ["--prompt=The cat", "--prompt=A dog",
                                     "--temperature=0.8", "--top_k=20", "--top_p=0.9",
                                     "--seed=3", "--stop=<eop>"])
  assert args.run(args, "") == 0
  out = capsys.readouterr().out
  assert "--- [0] ---\nThe cat" in out and "--- [1] ---\nA dog" in out
  args = parser.parse_args(common + ["--prompt=the end.", "--direction=r2l"])
  assert args.run(args, "") == 0
  assert capsys.readouterr().out.rstrip().endswith("the end.")
  args = parser.parse_args(common + ["--prompt=Hi", "--chat", "--system=Be brief."])
  assert args.run(args, "") == 0
  with pytest.raises(SystemExit, match="not a single piece"):
    args = parser.parse_args(common + ["--prompt=x", "--stop=nonsense piece"])
    args.run(args, "")
