"""Token cross-entropy: against log-softmax, and the chunked form against the plain one."""

import jax.numpy as jnp
import numpy as np
import pytest
from testlib import random_logits

from batgpt_jax.objectives import tokens


def test_cross_entropy_matches_log_softmax():
  logits, targets = random_logits()
  ce, log_z, correct = tokens.token_cross_entropy(logits, targets)
  logp = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
  want = -np.take_along_axis(logp, np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(np.asarray(ce), want, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(correct), np.argmax(logits, -1) == targets)
  assert log_z.shape == targets.shape


@pytest.mark.parametrize("chunk", [4, 5, 16])  # divides the length, does not, exceeds it
def test_chunked_cross_entropy_equals_plain_in_value_and_gradient(chunk):
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(7)
  hidden = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(8, 50)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 12)), jnp.int32)
  weights = jnp.asarray(rng.random((2, 12)), jnp.float32)

  def loss(h, w, chunked):
    if chunked:
      ce, log_z, correct = tokens.chunked_token_cross_entropy(h, w, targets, chunk)
    else:
      ce, log_z, correct = tokens.token_cross_entropy(h @ w, targets)
    return jnp.sum(ce * weights) + 1e-2 * jnp.sum(log_z ** 2), correct

  (plain, plain_correct), plain_grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(
      hidden, head, False)
  (chunked, chunked_correct), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(
      hidden, head, True)
  assert float(chunked) == pytest.approx(float(plain), rel=1e-6)
  np.testing.assert_array_equal(np.asarray(chunked_correct), np.asarray(plain_correct))
  for a, b in zip(grads, plain_grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 5, 16])
@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_fused_cross_entropy_equals_autodiff_of_the_plain_loss(chunk, z_loss):
  """Loss, per-token terms and the gradients of hidden and head, weights on some tokens only."""
  import jax  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(8)
  hidden = jnp.asarray(rng.normal(size=(2, 12, 8)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(8, 50)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 50, (2, 12)), jnp.int32)
  weights = jnp.asarray(rng.random((2, 12)) * (rng.random((2, 12)) > 0.3), jnp.float32)

  def plain(h, w):
    ce, log_z, correct = tokens.token_cross_entropy(h @ w, targets)
    return tokens.weighted_loss(ce, log_z, weights, z_loss), (ce, log_z, correct)

  def fused(h, w):
    loss, *terms = tokens.fused_cross_entropy(h, w, targets, weights, z_loss, chunk)
    return loss, tuple(terms)

  (want, want_terms), want_grads = jax.value_and_grad(plain, (0, 1), has_aux=True)(hidden, head)
  (got, terms), grads = jax.jit(jax.value_and_grad(fused, (0, 1), has_aux=True))(hidden, head)
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  for a, b in zip(terms, want_terms):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  for a, b in zip(grads, want_grads):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # Scaling the loss scales the gradient: the backward pass applies its cotangent.
  halved = jax.grad(lambda h, w: 0.5 * fused(h, w)[0], (0, 1))(hidden, head)
  for a, b in zip(halved, want_grads):
    np.testing.assert_allclose(np.asarray(a), 0.5 * np.asarray(b), rtol=1e-5, atol=1e-6)
