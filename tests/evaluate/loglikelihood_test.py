"""The scorer against a direct forward pass: per-request sums, padding, greedy flags, windows."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from batgpt_jax.evaluate import loglikelihood
from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import options
from testlib import direct_continuation_logprob, trained_like_params

CFG = ModelConfig(vocab_size=400, max_len=48, init_std=0.2)


@pytest.fixture(scope="module")
def loaded(data_tiny_vocab):
  return options.Loaded(cfg=CFG, params=trained_like_params(CFG, seed=3),
                        vocabulary=data_tiny_vocab, mesh=None, rules=(), source="test/0")


@functools.partial(jax.jit, static_argnums=0)
def _log_softmax(cfg, params, ids):
  positions = jnp.arange(ids.shape[1])[None]
  return jax.nn.log_softmax(transformer.apply(cfg, params, ids, positions, jnp.ones_like(ids)))


def direct(loaded_, context, continuation) -> tuple[float, bool]:
  return direct_continuation_logprob(loaded_.cfg, loaded_.params, context, continuation)


def _requests(seed=0, n=7):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    context = [3] + rng.integers(10, 400, int(rng.integers(1, 30))).tolist()
    out.append(loglikelihood.Request(tuple(context),
                                     tuple(rng.integers(10, 400, int(rng.integers(1, 6))))))
  return out


def test_scores_equal_a_direct_forward_pass(loaded):
  requests = _requests()
  scores = loglikelihood.score(loaded, requests, batch_size=3)  # 3 batches, the last padded
  for request, got in zip(requests, scores):
    want, greedy = direct(loaded, *request)
    assert got.logprob == pytest.approx(want, abs=1e-5)
    assert got.greedy == greedy


def test_padding_and_batch_neighbours_never_change_a_score(loaded):
  short = loglikelihood.Request((3, 40, 41), (42, 43))
  alone = loglikelihood.score(loaded, [short], batch_size=1)[0]
  crowded = loglikelihood.score(loaded, [*_requests(1, 5), short], batch_size=6)[-1]
  assert loglikelihood.bucket(2 + 2 - 1, CFG.max_len) == 16  # alone: width 16; crowded: 32
  assert crowded.logprob == pytest.approx(alone.logprob, abs=1e-5)


def test_greedy_is_true_exactly_for_the_argmax_continuation(loaded):
  context = (3, 50, 60, 70)
  ids = list(context)
  for _ in range(3):  # the greedy continuation, one token at a time
    logp = np.asarray(_log_softmax(CFG, loaded.params, jnp.asarray([ids])))[0]
    ids.append(int(np.argmax(logp[-1])))
  greedy_cont = tuple(ids[len(context):])
  other = greedy_cont[:2] + ((greedy_cont[2] + 1) % 400,)
  got = loglikelihood.score(loaded, [(context, greedy_cont), (context, other)])
  assert [s.greedy for s in got] == [True, False]
  assert got[0].logprob > got[1].logprob


def test_long_requests_keep_their_last_max_len_plus_one_tokens(loaded):
  context = tuple([3] + list(range(10, 70)))  # 61 tokens: longer than max_len=48
  cont = (80, 81)
  cut = loglikelihood.fit(loglikelihood.Request(context, cont), CFG.max_len)
  assert len(cut.context) + len(cut.continuation) == CFG.max_len + 1
  assert cut.context == context[-(CFG.max_len - 1):]
  got = loglikelihood.score(loaded, [(context, cont)])[0]
  assert got.logprob == pytest.approx(direct(loaded, cut.context, cont)[0], abs=1e-5)


def test_rolling_windows_predict_every_token_once_with_full_context():
  ids = list(range(100, 200))  # 100 ids: 99 predicted
  windows = loglikelihood.rolling_windows(ids, 48)
  predicted = [t for w in windows for t in w.continuation]
  assert predicted == ids[1:]
  assert [len(w.continuation) for w in windows] == [48, 48, 3]
  assert all(len(w.context) + len(w.continuation) - 1 <= 48 for w in windows)
  assert len(windows[1].context) + len(windows[1].continuation) - 1 == 48


def test_rolling_loglikelihood_equals_the_sum_of_direct_windows(loaded):
  vocabulary = loaded.vocabulary
  texts = ["the cat sees the dog", "the baker sells bread in the small town " * 6]
  got = loglikelihood.rolling_loglikelihood(loaded, texts, batch_size=2)
  for text_, value in zip(texts, got):
    ids = [3] + [int(i) for i in vocabulary.encode(text_)]
    windows = loglikelihood.rolling_windows(ids, CFG.max_len)
    assert value == pytest.approx(sum(direct(loaded, *w)[0] for w in windows), abs=1e-4)
  short_ids = [3] + [int(i) for i in vocabulary.encode(texts[0])]
  assert got[0] == pytest.approx(direct(loaded, short_ids[:1], short_ids[1:])[0], abs=1e-4)


def test_text_request_cuts_the_whole_texts_tokens(data_tiny_vocab):
  request = loglikelihood.text_request(data_tiny_vocab, "the cat sees", " the dog")
  whole = [int(i) for i in data_tiny_vocab.encode("the cat sees the dog")]
  assert request.context[0] == 3  # <l2r>
  assert list(request.context[1:]) + list(request.continuation) == whole
  assert data_tiny_vocab.decode(list(request.continuation)).strip() == "the dog"


def test_errors_say_what_to_change(data_tiny_vocab):
  with pytest.raises(ValueError, match="empty continuation"):
    loglikelihood.text_request(data_tiny_vocab, "the cat", "")
  with pytest.raises(ValueError, match="rolling_loglikelihood"):
    loglikelihood.fit(loglikelihood.Request((3,), tuple(range(10, 60))), 48)
  with pytest.raises(ValueError, match="direction token"):
    loglikelihood.fit(loglikelihood.Request((), (5,)), 48)
