import jax
import jax.numpy as jnp
import pytest

from batgpt_jax.model import transformer
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import metrics

TINY = ModelConfig()  # the defaults are the tiny size


def test_flops_per_token_equals_a_hand_count_for_tiny():
  # tiny: hidden 64, 2 layers, 4 heads / 2 KV x 16, FFN 192, vocab 2048; sequence 128.
  d, layers, heads, kv, hd, ffn, vocab, seq = 64, 2, 4, 2, 16, 192, 2048, 128
  per_layer_matmul_params = (d * heads * hd      # q
                             + 2 * d * kv * hd    # k, v
                             + heads * hd * d     # o
                             + 3 * d * ffn)       # gate, up, down
  forward = 2 * (layers * per_layer_matmul_params + d * vocab)
  # QK^T and AV: 2 FLOPs x heads x head_dim per (query, key) pair each; causal: half the pairs.
  attention_forward = layers * 2 * (2 * heads * hd * seq) / 2
  assert metrics.train_flops_per_token(TINY, seq) == 3 * (forward + attention_forward)


def test_flops_agree_with_xla_for_the_forward_matmuls():
  """XLA's own count of the forward pass, with the attention counted in full (no causal skip).

  One layer: XLA's cost analysis counts the body of the layer scan once, whatever its length.
  """
  seq, cfg = 64, ModelConfig(n_layers=1)
  params = jax.eval_shape(lambda: transformer.init_params(cfg, 0))
  tokens = jnp.zeros((1, seq), jnp.int32)
  forward = jax.jit(lambda p, t: transformer.apply(cfg, p, t, jnp.arange(seq)[None], t + 1))
  cost = forward.lower(params, tokens).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  dense = 2 * metrics.matmul_params(cfg) * seq
  full_attention = cfg.n_layers * 4 * cfg.n_heads * cfg.head_dim * seq * seq
  # Elementwise work (norms, RoPE, softmax, SwiGLU) adds a few percent on top of the matmuls.
  assert dense + full_attention <= cost["flops"] <= 1.15 * (dense + full_attention)


def test_throughput_reports_tokens_per_second_and_mfu():
  meter = metrics.Throughput(tokens_per_step=1000, total_steps=10, flops_per_token=6.0,
                             peak_flops=1e4)
  meter.start(0)
  meter.mark_time -= 2.0  # pretend two seconds passed over 4 steps
  out = meter.report(4)
  assert out["perf/tokens_per_second"] == pytest.approx(2000, rel=0.01)
  assert out["perf/mfu"] == pytest.approx(2000 * 6.0 / 1e4, rel=0.01)
  assert out["perf/eta_seconds"] == pytest.approx(3.0, rel=0.01)


def test_spec_sheet_peaks():
  class Device:
    device_kind = "NVIDIA H100 80GB HBM3"
  assert metrics.spec_peak_flops(Device()) == 989e12
  Device.device_kind = "TPU v5p"
  assert metrics.spec_peak_flops(Device()) == 459e12
  Device.device_kind = "cpu"
  assert metrics.spec_peak_flops(Device()) is None


def test_console_lines_show_token_groups_or_pair_metrics():
  lm = {"loss": 1.5, "l2r/loss": 1.25, "l2r/perplexity": 3.49, "l2r/accuracy": 0.5,
        "l2r/tokens": 10.0, "r2l/tokens": 0.0}
  assert metrics.eval_line(7, lm) == "eval @ 7 | L2R loss 1.250 ppl 3.5 acc 0.500"
  dpo = {"loss": 0.25, "reward/accuracy": 0.9375, "reward/margin": 1.5, "kl/sequence": 2.0}
  assert metrics.eval_line(9, dpo) == ("eval @ 9 | loss 0.250 | pair acc 0.938 | margin 1.500 | "
                                       "KL 2.000")
  line = metrics.progress_line(9, 10, {**dpo, "learning_rate": 1e-4}, {})
  assert line == "step 9/10 | loss 0.250 | pair acc 0.938 | margin 1.500 | KL 2.000 | lr 1.00e-04"


def test_the_cpu_peak_probe_compiles_only_its_matmul():
  compiles = []

  def listener(event, seconds, **_):
    del seconds
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    peak = metrics.measure_matmul_peak(size=96, repeats=2)  # a size no other test compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert 1e7 < peak < 1e15  # FLOP/s: any CPU from a phone to a large server
  assert len(compiles) == 1, compiles  # drawn with jax.random, the operands cost more
