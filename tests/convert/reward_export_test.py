"""A reward model exported as transformers' *ForSequenceClassification scores what ours scores.

A random reward model (decoder, head kernel and a non-zero head bias) is scored by
`batgpt reward score`'s own path (pair rows, the reward read at each <eop>) and by the exported
Hugging Face classifier on each side's `<l2r> ... <eop>` ids, right- and left-padded in one
batch: logit + output_bias equals our raw reward within 1e-4.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# pylint: disable=wrong-import-position
from batgpt_jax import checkpoints
from batgpt_jax.align import reward_score
from batgpt_jax.convert import hf_to_orbax, orbax_to_hf, reward
from batgpt_jax.convert.layout import LayoutError
from batgpt_jax.data import preferences
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import heads
from batgpt_jax.model.config import ModelConfig

SEQ_LEN = 256
BIAS = 0.37
CALIBRATION = {"mean": 0.8, "std": 1.7}
PAIRS = [  # different prompt and answer lengths, one with a history turn
    preferences.Pair((), "Sort 3 1 2.", "1 2 3", "1 3 2"),
    preferences.Pair((), "Name a colour you like.", "Blue, like the sky in the morning.",
                     "No."),
    preferences.Pair((("Hello there.", "Hi! How can I help?"),), "Tell me about the weather.",
                     "It is sunny today.", "I do not know anything about the weather at all."),
]


def _config(vocab_size: int, **rope) -> ModelConfig:
  return ModelConfig(vocab_size=vocab_size, hidden=32, n_layers=2, n_heads=4, n_kv_heads=2,
                     head_dim=8, ffn=48, max_len=SEQ_LEN, **rope)


def _reward_run(run_dir: str, cfg: ModelConfig) -> dict:
  """A step-0 reward checkpoint with random parameters, a non-zero bias and a calibration."""
  rng = np.random.default_rng(1)  # numpy: compiling a jax init costs more than the whole test

  def fill(path, leaf):  # norm gains near 1, every other weight and bias random, none zero
    noise = rng.standard_normal(leaf.shape).astype(leaf.dtype)
    return jnp.asarray(1.0 + 0.1 * noise if path[-1].key == "scale" else 0.15 * noise)

  params = jax.tree_util.tree_map_with_path(fill, heads.abstract_params(cfg, (reward.HEAD,)))
  params[reward.HEAD]["output_bias"] = jnp.asarray(BIAS, jnp.float32)
  mngr = checkpoints.manager(f"{run_dir}/checkpoints", keep=1, async_save=False)
  state = {"step": jnp.zeros((), jnp.int32), "params": params}
  checkpoints.save(mngr, state, data_position=0, model_cfg=cfg, gin_text="", force=True,
                   calibration=CALIBRATION)
  mngr.wait_until_finished()
  mngr.close()
  return params


def _answer_ids(vocabulary) -> list[list[int]]:
  """Each pair's chosen then rejected side, `<l2r>` through the answer's `<eop>`, from the very
  row that `batgpt reward score` scores."""
  l2r, _ = vocab_lib.direction_ids(vocabulary)
  out = []
  for pair in PAIRS:
    doc = preferences.pair_example(vocabulary, pair, seq_len=SEQ_LEN, eos_id=vocab_lib.EOS_ID,
                                   l2r_id=l2r)
    row = preferences.pair_row(doc, SEQ_LEN, l2r)
    for side in (1, 2):
      end = int(np.flatnonzero((row["segment_ids"] == side) & (row["score_at"] == 1))[0])
      out.append(row["tokens"][(row["segment_ids"] == side) & (np.arange(SEQ_LEN) <= end)])
  return [ids.tolist() for ids in out]


def _padded(sequences, pad_id: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
  length = max(len(s) for s in sequences)
  ids = np.full((len(sequences), length), pad_id, np.int64)
  mask = np.zeros_like(ids)
  for row, seq in enumerate(sequences):
    where = slice(length - len(seq), length) if left else slice(0, len(seq))
    ids[row, where], mask[row, where] = seq, 1
  return ids, mask


def _hf_logits(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


@pytest.mark.parametrize("kind,qkv_bias", [("qwen2", True), ("llama", False)])
def test_exported_classifier_scores_like_ours(kind, qkv_bias, tmp_path, data_tiny_vocab):
  cfg = _config(data_tiny_vocab.vocab_size, rope_style="half_split", rope_fraction=1.0,
                qkv_bias=qkv_bias)
  params = _reward_run(str(tmp_path / "run"), cfg)
  result = orbax_to_hf.export(str(tmp_path / "run"), str(tmp_path / "hf"), progress=False)
  assert result.layout == kind and "generation_config.json" not in result.files
  with open(tmp_path / "hf" / "config.json", encoding="utf-8") as f:
    config = json.load(f)
  assert config["architectures"] == [reward.ARCHITECTURES[kind]]
  assert config["pad_token_id"] == vocab_lib.PAD_ID
  assert config[reward.CONFIG_KEY]["output_bias"] == pytest.approx(BIAS)
  assert config[reward.CONFIG_KEY]["calibration"] == CALIBRATION

  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(tmp_path / "hf"), dtype=torch.float32).eval()
  assert type(model).__name__ == reward.ARCHITECTURES[kind] and model.config.num_labels == 1
  ours = reward_score.score_pairs(reward_score.load(str(tmp_path / "run")), data_tiny_vocab,
                                  PAIRS, seq_len=SEQ_LEN, batch=2).reshape(-1)  # c, r, c, r...
  assert np.ptp(ours) > 0.5  # the answers' scores differ: not a comparison of constants

  sides = _answer_ids(data_tiny_vocab)
  assert len({len(s) for s in sides}) >= 4  # rows padded by different amounts
  for left in (False, True):
    logits = _hf_logits(model, *_padded(sides, vocab_lib.PAD_ID, left))  # [2 * pairs, 1]
    np.testing.assert_allclose(logits[:, 0] + BIAS, ours, atol=1e-4, rtol=0,
                               err_msg=f"left padding: {left}")

  # Import back: a reward run whose decoder and head are the exported ones, bias included.
  hf_to_orbax.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"), progress=False)
  back = checkpoints.read_params(*checkpoints.find_step(str(tmp_path / "back")))
  np.testing.assert_array_equal(back["embed"]["embedding"].T, back["lm_head"])
  del back["lm_head"], params["lm_head"]
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_batgpt_layout_is_refused_for_a_reward_model(tmp_path):
  batgpt_shaped = _config(96, rope_style="interleaved", rope_fraction=0.5, qkv_bias=True)
  _reward_run(str(tmp_path / "batgpt"), batgpt_shaped)
  with pytest.raises(LayoutError, match=r"(?s)fits neither.*qwen2.*llama.*half_split"):
    orbax_to_hf.export(str(tmp_path / "batgpt"), str(tmp_path / "hf"), progress=False)

  qwen2_shaped = dataclasses.replace(batgpt_shaped, rope_style="half_split", rope_fraction=1.0)
  _reward_run(str(tmp_path / "qwen2"), qwen2_shaped)
  with pytest.raises(LayoutError, match="--layout=qwen2 or --layout=llama"):
    orbax_to_hf.export(str(tmp_path / "qwen2"), str(tmp_path / "hf"), layout_name="batgpt",
                       progress=False)
  assert not (tmp_path / "hf").exists()  # refused before anything was written
