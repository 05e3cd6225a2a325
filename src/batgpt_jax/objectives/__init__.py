"""Training objectives behind one contract (`contract.py`), chosen by name in gin.

`TrainConfig.objective = 'pretrain'` (bidirectional, the default), `'sft'` (instruction
tuning), `'reward'` (pairwise reward model) or `'dpo'` (DPO / IPO / cDPO; preference.py). A new
algorithm is a new module here with an `objective(model_cfg, loss_chunk)` builder and a line in
`OBJECTIVES`; the step, the loop, the sharding and the checkpoints are shared.

`'ppo'` (OUTER_LOOPS) is not one loss but an outer loop around the same step: rollouts, scoring
and advantages (align/ppo.py), then ppo.py's policy and value objectives through the step.
`train.loop.train` (so `batgpt train`) runs it when TrainConfig.objective names it.
"""

import difflib

from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import preference, pretrain, sft
from batgpt_jax.objectives.contract import Objective

OBJECTIVES = {
    "pretrain": pretrain.objective,
    "sft": sft.objective,
    "reward": preference.reward_objective,
    "dpo": preference.dpo_objective,
}
OUTER_LOOPS = ("ppo",)


def build(name: str, model_cfg: ModelConfig, loss_chunk: int = 0) -> Objective:
  if name in OUTER_LOOPS:
    raise ValueError(f"TrainConfig.objective={name!r} is an outer loop, not one loss: "
                     "`batgpt train` runs it (align/ppo.py's train), not train/loop.py.")
  if name not in OBJECTIVES:
    close = difflib.get_close_matches(name, list(OBJECTIVES) + list(OUTER_LOOPS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"TrainConfig.objective={name!r} is not an objective; expected one of "
                     f"{sorted(OBJECTIVES)} (or an outer loop: {OUTER_LOOPS}).{hint}")
  return OBJECTIVES[name](model_cfg, loss_chunk)
