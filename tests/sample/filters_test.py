"""Top-k and top-p keep the right tokens; the log-probability is the tempered, unfiltered one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.sample import engine, filters

PROBS = [[0.5, 0.3, 0.15, 0.05]]


def test_filter_logits():
  logits = jnp.log(jnp.asarray(PROBS))
  kept = lambda out: np.isfinite(np.asarray(out))[0].tolist()
  assert kept(filters.filter_logits(logits, top_k=2, top_p=1.0)) == [True, True, False, False]
  assert kept(filters.filter_logits(logits, top_k=0, top_p=0.5)) == [True, False, False, False]
  assert kept(filters.filter_logits(logits, top_k=0, top_p=0.7)) == [True, True, False, False]
  assert kept(filters.filter_logits(logits, top_k=0, top_p=0.9)) == [True, True, True, False]
  assert kept(filters.filter_logits(logits, top_k=3, top_p=0.7)) == [True, True, False, False]


def test_choose_samples_the_filtered_distribution_and_scores_the_unfiltered_one():
  logits = jnp.log(jnp.asarray(PROBS * 2000))  # 2000 rows, one draw each
  token, logprob = filters.choose(logits, jax.random.key(0), temperature=1.0, top_k=2, top_p=1.0)
  counts = np.bincount(np.asarray(token), minlength=4) / 2000
  np.testing.assert_allclose(counts, [0.625, 0.375, 0, 0], atol=0.04)  # renormalised top 2
  np.testing.assert_allclose(logprob, np.log(np.asarray(PROBS[0]))[np.asarray(token)], atol=1e-6)
  token, logprob = filters.choose(logits[:1], None, temperature=0.0, top_k=0, top_p=1.0)
  assert token.tolist() == [0] and np.allclose(logprob, np.log(0.5))
  token, logprob = filters.choose(logits[:1], jax.random.key(1), temperature=2.0, top_k=1,
                                  top_p=1.0)
  want = jax.nn.log_softmax(jnp.log(jnp.asarray(PROBS)) / 2.0)[0, 0]  # not 0: unfiltered
  assert token.tolist() == [0] and np.allclose(logprob, want, atol=1e-6)


def test_sampling_settings_are_checked():
  with pytest.raises(ValueError, match=r"top_p=0.0 \(need a value in \(0, 1\]"):
    engine.SamplingConfig(top_p=0.0)
  with pytest.raises(ValueError, match="max_new_tokens=0.*temperature=-1"):
    engine.SamplingConfig(max_new_tokens=0, temperature=-1)
