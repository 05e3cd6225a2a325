"""The loss contract that every objective follows, so that one step serves them all.

An objective's loss is a pure function `(params, batch, frozen) -> (loss_sum, weight_total,
metric_sums)`: a SUM over the batch with its weight, never a mean. Microbatches, devices and hosts
then add up first and divide once, so the mean over the global batch is exact whatever the split.
`frozen` holds the parameter trees of frozen roles (a reference or reward model), or is empty;
an objective names the roles it needs (`frozen_roles`) and any scalar heads it trains (`heads`),
and the loop builds the state and loads the roles from that.
`summarize(loss_sum, weight_total, sums)` turns the summed metrics into the reported means.
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp

LossFn = Callable  # (params, batch, frozen) -> (loss_sum, weight_total, metric_sums)


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  loss: LossFn  # what the optimizer minimises
  eval_loss: LossFn  # what held-out batches are scored with (e.g. without regularisers)
  summarize: Callable  # (loss_sum, weight_total, metric_sums) -> {metric: mean}
  heads: tuple[str, ...] = ()  # scalar heads (model/heads.py) trained with the decoder
  frozen_roles: tuple[str, ...] = ()  # parameter trees the loop passes in `frozen` (no optimizer)


def group_means(sums: dict, groups) -> dict:
  """`<g>/loss_sum`, `<g>/correct`, `<g>/tokens` -> loss, accuracy, perplexity, tokens per group."""
  out = {}
  for name in groups:
    count = sums[f"{name}/tokens"]
    mean = sums[f"{name}/loss_sum"] / jnp.maximum(count, 1.0)
    out[f"{name}/loss"] = mean
    out[f"{name}/accuracy"] = sums[f"{name}/correct"] / jnp.maximum(count, 1.0)
    out[f"{name}/perplexity"] = jnp.exp(jnp.minimum(mean, 50.0))
    out[f"{name}/tokens"] = count
  return out
