"""RLHF with PPO: an outer loop (rollout, score, advantages) around the shared training step.

`batgpt train` with `TrainConfig.objective = 'ppo'` (gin/ppo.gin) runs `train` here. Four roles
share the mesh, each placed by the logical-axis rules:

  policy     trained; starts from TrainConfig.init_from (the SFT run)
  reference  frozen, no optimizer state; TrainConfig.reference_from (default: init_from)
  value      trained; the decoder of PPOConfig.value_from (default: the reward model) with its
             own, fresh value head. With PPOConfig.shared_backbone the value head sits on the
             policy instead: no value model, and the policy's loss adds value_coef x the value
             loss (half the trained parameters; the two losses then share one backbone)
  reward     frozen; PPOConfig.reward_from, a reward run (TrainConfig.objective = 'reward')

One iteration (TrainConfig.steps counts them): `rollout_batch` prompts (data/prompts.py, from
DataConfig.sources, each source's rate its share of the batch) are answered by the generation engine
at ppo_settings.temperature; the four roles score the rows (align/rollout.py: log-probs, values, the
reward at the last token, the KL folded into per-token rewards, GAE); then `epochs` passes over
`minibatches` shuffled minibatches, each one step of the policy (objectives/ppo.py's clipped loss,
plus gamma_ptx x a pretraining batch of PPOConfig.ptx_data through the bidirectional objective and
gamma_sft x an instruction batch of PPOConfig.sft_data through the SFT objective) and one step of
the value model (none with a shared backbone). The steps are train/step.py's, microbatching
(TrainConfig.microbatches), clipping and the non-finite skip included. With PPOConfig.kl_target the
KL coefficient adapts after each iteration (proportional control, Ziegler et al. 2019): coef *= 1 +
clip(KL / target - 1, -0.2, 0.2) * rollout_batch / kl_horizon.

Resume. A checkpoint holds the policy (as `params` and `opt_state`, so every command that reads a
run's parameters reads the policy; with a shared backbone its value head is among them), the value
model with its optimizer state, the KL coefficient and the iteration. Everything random is a
function of (TrainConfig.seed, iteration): the prompts of iteration i, the sampling key, the
minibatch order; the ptx and sft streams are resumed at their positions (iteration x epochs x
minibatches batches). A killed run therefore continues exactly as the uninterrupted one.

Eval (at iteration 0, the SFT model itself, then every TrainConfig.eval_every iterations): the
first `eval_prompts` held-out prompts answered at the training temperature with a fixed key:
reward, KL to the reference, reply length, <eop> rate and the share of replies equal to the
record's reference reply (on the planted tasks: replies that follow the preferred rule); plus
the held-out loss of the ptx and sft data, when they are configured, whatever their gamma (so a
run without an anchor shows what it loses).
"""

import dataclasses
import os
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from batgpt_jax import checkpoints, logs, parallel
from batgpt_jax.align import reward_score, rollout
from batgpt_jax.data import chat, pipeline
from batgpt_jax.data import prompts as prompts_lib
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.model import config as model_config
from batgpt_jax.model import heads as model_heads
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.objectives import ppo, pretrain, sft
from batgpt_jax.sample import engine
from batgpt_jax.train import faults, loop, metrics
from batgpt_jax.train import state as train_state
from batgpt_jax.train import step as train_step

ANCHORS = ("ptx", "sft")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PPOConfig:
  """The outer loop: roles, rollout sizes, epochs, the KL controller, anchoring data."""

  reward_from: str | None = None  # a reward run: the frozen reward model
  value_from: str | None = None  # the value model's decoder (None: reward_from)
  shared_backbone: bool = False  # the value head on the policy's backbone: no value model
  rollout_batch: int = 64  # prompts answered per iteration
  max_prompt_len: int = 64  # longer prompts drop their oldest turns, or are skipped
  max_new_tokens: int = 16
  top_k: int = 0
  top_p: float = 1.0
  epochs: int = 4  # passes over each rollout batch
  minibatches: int = 4  # policy and value steps per pass
  kl_coef: float = 0.05  # the initial (or fixed) KL coefficient
  kl_target: float | None = None  # adaptive control toward this sequence KL (nats); None: fixed
  kl_horizon: int = 10_000
  missing_eop_penalty: float = -1.0  # added to the score of a reply cut by max_new_tokens
  normalise_reward: bool = True  # score = (r - mean) / std of the reward model's calibration
  eval_prompts: int = 64
  ptx_data: pipeline.DataConfig | None = None  # e.g. @ptx/DataConfig(): the pretraining mix
  sft_data: pipeline.DataConfig | None = None  # e.g. @sft/DataConfig(): instruction data
  value_optimizer: train_state.OptimizerConfig | None = None  # None: the policy's

  def __post_init__(self):
    problems = []
    if not self.reward_from:
      problems.append("reward_from is not set: name the reward run, e.g. "
                      "--gin.PPOConfig.reward_from=\"'runs/reward'\"")
    if self.rollout_batch < 1 or self.minibatches < 1 or self.epochs < 1:
      problems.append(f"rollout_batch={self.rollout_batch}, epochs={self.epochs} and "
                      f"minibatches={self.minibatches} must be >= 1")
    elif self.rollout_batch % self.minibatches:
      problems.append(f"rollout_batch={self.rollout_batch} is not divisible by minibatches="
                      f"{self.minibatches}")
    if self.max_prompt_len < 2 or self.max_new_tokens < 1:
      problems.append(f"max_prompt_len={self.max_prompt_len} (need >= 2) and max_new_tokens="
                      f"{self.max_new_tokens} (need >= 1)")
    if self.kl_coef < 0 or (self.kl_target is not None and self.kl_target <= 0):
      problems.append(f"kl_coef={self.kl_coef} must be >= 0 and kl_target={self.kl_target} > 0 "
                      "(or None for a fixed coefficient)")
    if self.kl_horizon < 1 or self.eval_prompts < 1:
      problems.append(f"kl_horizon={self.kl_horizon} and eval_prompts={self.eval_prompts} must "
                      "be >= 1")
    if self.shared_backbone and (self.value_from or self.value_optimizer):
      problems.append("shared_backbone=True puts the value head on the policy, so there is no "
                      "value model for value_from or value_optimizer: unset them (the value "
                      "loss's weight is ppo_settings.value_coef)")
    if problems:
      raise ValueError("Invalid PPOConfig: " + "; ".join(problems) + ".")


def adaptive_kl_coef(coef: float, kl: float, target: float, horizon: int, samples: int) -> float:
  """The next KL coefficient: proportional control toward `target`, at most 20% per horizon."""
  error = float(np.clip(kl / target - 1.0, -0.2, 0.2))
  return coef * (1.0 + error * samples / horizon)


@dataclasses.dataclass
class Roles:
  cfgs: dict  # role -> ModelConfig
  policy: dict  # {'step', 'params', 'opt_state'}; params carry the value head if shared
  value: dict | None  # the same, with the value head; None with a shared backbone
  frozen: dict  # {'reference': params, 'reward': params}
  calibration: tuple[float, float]
  shardings: dict  # 'policy', 'value': state shardings


def role_memory(cfgs: dict, tx_policy, tx_value, shared_backbone: bool = False) -> dict:
  """Bytes of each role's arrays (parameters, and optimizer state for the trained ones), from
  `jax.eval_shape` alone: {'policy', 'reference', 'value', 'reward', 'total'}. With a shared
  backbone the value head is the policy's and 'value' is 0."""
  size = lambda tree: sum(np.dtype(a.dtype).itemsize * int(np.prod(a.shape))
                          for a in jax.tree.leaves(tree))
  value_head = (ppo.VALUE_HEAD,)
  out = {"policy": size(train_state.abstract_state(cfgs["policy"], tx_policy,
                                                   value_head if shared_backbone else ())),
         "reference": size(model_heads.abstract_params(cfgs["reference"])),
         "value": 0 if shared_backbone else size(
             train_state.abstract_state(cfgs["value"], tx_value, value_head)),
         "reward": size(model_heads.abstract_params(cfgs["reward"], (reward_score.HEAD,)))}
  out["total"] = sum(out.values())
  return out


def _build_roles(cfg: loop.TrainConfig, ppo_cfg: PPOConfig, model_cfg: ModelConfig, mesh, rules,
                 tx_policy, tx_value) -> Roles:
  shared = ppo_cfg.shared_backbone
  value_from = cfg.init_from if shared else ppo_cfg.value_from or ppo_cfg.reward_from
  reward = reward_score.load(ppo_cfg.reward_from, mesh=mesh, rules=rules)
  if reward.calibration is None and ppo_cfg.normalise_reward:
    raise ValueError(f"The reward model {reward.source} has no calibration (its run never "
                     "evaluated), so its scores cannot be normalised: evaluate it (batgpt eval "
                     "--gin_file=reward.gin ...) or set PPOConfig.normalise_reward = False.")
  calibration = ((reward.calibration["mean"], reward.calibration["std"])
                 if reward.calibration else (0.0, 1.0))
  cfgs = {"policy": model_cfg, "reference": model_cfg, "reward": reward.cfg,
          "value": checkpoints.read_config(*checkpoints.find_step(value_from))[0]}
  for role in ("reward", "value"):
    if cfgs[role].vocab_size != model_cfg.vocab_size:
      raise ValueError(f"The {role} model has vocab_size {cfgs[role].vocab_size}, the policy "
                       f"{model_cfg.vocab_size}: the roles must share one tokenizer. Train the "
                       "reward model from the policy's SFT run.")
  value_head = (ppo.VALUE_HEAD,)
  trained = {"policy": (tx_policy, value_head if shared else ())}
  if not shared:
    trained["value"] = (tx_value, value_head)
  shardings, states = {}, {}
  for role, (tx, heads) in trained.items():
    abstract = train_state.abstract_state(cfgs[role], tx, heads)
    shardings[role] = train_state.state_shardings(cfgs[role], tx, mesh, rules, abstract, heads)
    source = cfg.init_from if role == "policy" else value_from
    params = loop.initial_params(source, cfgs[role], shardings[role]["params"], heads, cfg.seed)
    states[role] = train_state.create_state(cfgs[role], tx, mesh, rules, cfg.seed, params=params,
                                            heads=heads)[0]
  frozen = loop.frozen_params(cfg, ("reference",), model_cfg,
                              train_state.param_shardings(model_cfg, mesh, rules))
  frozen["reward"] = reward.params
  metrics.log_console(f"Frozen reward model from {reward.source}; " + (
      f"the {ppo.VALUE_HEAD} on the policy's backbone" if shared else
      f"value model from {value_from} with its {ppo.VALUE_HEAD}"))
  return Roles(cfgs, states["policy"], states.get("value"), frozen, calibration, shardings)


# --- the checkpointed state: the policy at the top (params, opt_state), the rest beside it ------

def _checkpoint_tree(iteration, roles: Roles, kl_coef: float) -> dict:
  tree = {"step": jnp.asarray(iteration, jnp.int32), "params": roles.policy["params"],
          "opt_state": roles.policy["opt_state"], "policy_step": roles.policy["step"],
          "kl_coef": jnp.asarray(kl_coef, jnp.float32)}
  if roles.value is not None:
    tree["value"] = roles.value
  return tree


def _abstract_checkpoint(roles: Roles, mesh) -> tuple[dict, dict]:
  replicated = NamedSharding(mesh, PartitionSpec())
  tree = _checkpoint_tree(0, roles, 0.0)
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  shardings = {"step": replicated, "params": roles.shardings["policy"]["params"],
               "opt_state": roles.shardings["policy"]["opt_state"],
               "policy_step": replicated, "kl_coef": replicated}
  if roles.value is not None:
    shardings["value"] = roles.shardings["value"]
  return abstract, shardings


# --- data ---------------------------------------------------------------------------------------

def _anchor_batches(name: str, data_cfg, vocab, cfg: loop.TrainConfig, start_position: int):
  """The ptx or sft training stream, resumed at `start_position` batches."""
  with logs.native_noise_filtered():
    return pipeline.train_batches(data_cfg, vocab, seq_len=cfg.seq_len,
                                  global_batch=cfg.global_batch, start_position=start_position)


def _with_norm(name: str, batch: dict) -> dict:
  """A ptx or sft batch with its objective's weight total on every row (objectives/ppo.py)."""
  rows = next(iter(batch.values())).shape[0]
  total = ppo.anchor_weight_total(name, batch)
  return dict(batch, norm=np.full((rows,), max(total, 1e-9), np.float32))


def _minibatch(rollout_rows: dict, index: np.ndarray) -> dict:
  """Rows `index` of the scored rollout, with their normalisers (objectives/ppo.py)."""
  out = {k: v[index] for k, v in rollout_rows.items()}
  rows = len(index)
  out["norm"] = np.full((rows,), max(float(out["reply_mask"].sum()), 1.0), np.float32)
  out["share"] = np.full((rows,), 1.0 / rows, np.float32)
  return out


TRAIN_FIELDS = ("tokens", "positions", "segment_ids", "reply_mask", "old_logp", "old_values",
                "advantages", "returns")


def _sampling(ppo_cfg: PPOConfig, settings: dict, vocab, seed: int) -> engine.SamplingConfig:
  eop = vocab.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  return engine.SamplingConfig(max_new_tokens=ppo_cfg.max_new_tokens,
                               temperature=settings["temperature"], top_k=ppo_cfg.top_k,
                               top_p=ppo_cfg.top_p, seed=seed,
                               stop_ids=(vocab_lib.EOS_ID, eop))


def _iteration_seed(seed: int, iteration: int) -> int:
  return int(np.random.default_rng([seed, iteration]).integers(2**31 - 1))


class Rollouts:
  """Answers and scores batches of prompts with the current roles."""

  def __init__(self, roles: Roles, ppo_cfg: PPOConfig, settings: dict, vocab, mesh, rules):
    self.roles, self.ppo_cfg, self.settings = roles, ppo_cfg, settings
    self.vocab, self.mesh, self.rules = vocab, mesh, rules
    self.cfgs = tuple(roles.cfgs[r] for r in rollout.ROLES)

  def __call__(self, prompts, seed: int, kl_coef: float) -> tuple[dict, dict, dict, dict]:
    """(rows, scored, timings, samples) for `prompts`: host numpy arrays."""
    start = time.perf_counter()
    samples = engine.sample(self.cfgs[0], self.roles.policy["params"], [p.ids for p in prompts],
                            _sampling(self.ppo_cfg, self.settings, self.vocab, seed),
                            mesh=self.mesh, rules=self.rules)
    generated = time.perf_counter()
    rows = rollout.rollout_rows(prompts, samples, max_prompt_len=self.ppo_cfg.max_prompt_len)
    params = {"policy": self.roles.policy["params"], **self.roles.frozen}
    if self.roles.value is not None:
      params["value"] = self.roles.value["params"]
    scored = rollout.score_rollout(
        params, parallel.global_batch(rows, self.mesh, self.rules), jnp.float32(kl_coef),
        jnp.asarray(self.roles.calibration, jnp.float32), cfgs=self.cfgs,
        settings=tuple(sorted(self.settings.items())),
        missing_eop_penalty=float(self.ppo_cfg.missing_eop_penalty),
        normalise=self.ppo_cfg.normalise_reward, shared_backbone=self.roles.value is None)
    scored = {k: np.asarray(v) for k, v in jax.device_get(scored).items()}
    timings = {"time/generate": generated - start, "time/score": time.perf_counter() - generated}
    return rows, scored, timings, samples


def reference_match(vocab, prompts, samples: engine.Samples) -> float:
  """The share of replies whose text equals their prompt's reference reply (stripped)."""
  replies = [vocab.decode(ids).strip() for ids in samples.output_ids()]
  return float(np.mean([r == p.reference.strip() for r, p in zip(replies, prompts)]))


# --- the loop -----------------------------------------------------------------------------------

def train(cfg: loop.TrainConfig, model_cfg: ModelConfig, data_cfg: pipeline.DataConfig,
          mesh_cfg: parallel.MeshConfig, opt_cfg: train_state.OptimizerConfig,
          gin_text: str = "") -> list[dict]:
  """Runs (or resumes) PPO to cfg.steps iterations; returns the logged records. `loop.train`
  calls it, holding the run directory's lock."""
  return _train(cfg, PPOConfig(), model_cfg, data_cfg, mesh_cfg, opt_cfg, gin_text)


def _check(cfg: loop.TrainConfig, ppo_cfg: PPOConfig) -> None:
  if jax.process_count() > 1:
    # Every host would answer the same prompts and count only its own anchor tokens.
    raise ValueError(f"PPO runs in one process (this job has {jax.process_count()}): its prompt "
                     "stream and the anchors' normalisers are not yet split across hosts. Run it "
                     "on one host's devices.")
  if not cfg.init_from:
    raise ValueError("PPO starts from an instruction-tuned policy: set TrainConfig.init_from to "
                     "the SFT run.")
  rows = ppo_cfg.rollout_batch // ppo_cfg.minibatches
  if rows % cfg.microbatches:
    raise ValueError(f"A minibatch of {rows} rollouts (PPOConfig.rollout_batch / minibatches) is "
                     f"not divisible by TrainConfig.microbatches={cfg.microbatches}.")


def _train(cfg, ppo_cfg: PPOConfig, model_cfg, data_cfg, mesh_cfg, opt_cfg, gin_text):
  _check(cfg, ppo_cfg)
  settings = ppo.ppo_settings()
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  parallel.log_mesh(mesh)
  metrics.log_console(f"Model: {model_config.describe(model_cfg)}")
  vocab = pipeline.vocabulary_for(data_cfg)
  updates = cfg.steps * ppo_cfg.epochs * ppo_cfg.minibatches
  value_opt_cfg = ppo_cfg.value_optimizer or opt_cfg
  tx_policy = train_state.make_optimizer(opt_cfg, updates)
  tx_value = train_state.make_optimizer(value_opt_cfg, updates)
  policy_schedule = train_state.placed_schedule(train_state.schedule_numbers(opt_cfg, updates),
                                                mesh)
  value_schedule = train_state.placed_schedule(
      train_state.schedule_numbers(value_opt_cfg, updates), mesh)
  roles = _build_roles(cfg, ppo_cfg, model_cfg, mesh, rules, tx_policy, tx_value)
  memory = role_memory(roles.cfgs, tx_policy, tx_value, ppo_cfg.shared_backbone)
  metrics.log_console("Role memory (parameters + optimizer state): " + ", ".join(
      f"{k} {v / 2**20:.1f} MiB" for k, v in memory.items()))

  anchors = {}
  for name, anchor_cfg in (("ptx", ppo_cfg.ptx_data), ("sft", ppo_cfg.sft_data)):
    if anchor_cfg is not None:
      anchor_vocab = pipeline.vocabulary_for(anchor_cfg)
      if anchor_vocab.vocab_size != vocab.vocab_size:
        raise ValueError(f"PPOConfig.{name}_data has a tokenizer of {anchor_vocab.vocab_size} "
                         f"pieces, the prompts one of {vocab.vocab_size}: give both the same "
                         "DataConfig.vocab_size (or vocabulary).")
      anchors[name] = anchor_cfg
    elif settings[f"gamma_{name}"] > 0:
      raise ValueError(f"ppo_settings.gamma_{name} = {settings[f'gamma_{name}']} but "
                       f"PPOConfig.{name}_data is not set: give it a DataConfig, e.g. "
                       f"PPOConfig.{name}_data = @{name}/DataConfig().")
  train_anchors = [n for n in anchors if settings[f"gamma_{n}"] > 0]

  policy_objective = ppo.policy_objective(model_cfg, settings, cfg.loss_chunk,
                                          value_head=ppo_cfg.shared_backbone)
  policy_step, _ = train_step.jit_steps(policy_objective, tx_policy, mesh, rules,
                                        roles.shardings["policy"], microbatches=cfg.microbatches)
  value_step = None if ppo_cfg.shared_backbone else train_step.jit_steps(
      ppo.value_objective(roles.cfgs["value"], settings), tx_value, mesh, rules,
      roles.shardings["value"], microbatches=cfg.microbatches)[0]
  anchor_objectives = {"ptx": pretrain.objective(model_cfg, cfg.loss_chunk),
                       "sft": sft.objective(model_cfg, cfg.loss_chunk)}
  anchor_evals = {name: train_step.jit_steps(anchor_objectives[name], tx_policy, mesh, rules,
                                             roles.shardings["policy"], microbatches=1)[1]
                  for name in anchors}

  mngr = checkpoints.manager(os.path.join(cfg.run_dir, "checkpoints"),
                             keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint,
                             timeout_s=cfg.checkpoint_timeout_s)
  abstract, ckpt_shardings = _abstract_checkpoint(roles, mesh)
  restored = checkpoints.restore_latest(mngr, abstract, ckpt_shardings, model_cfg, gin_text,
                                        move_aside=True)
  kl_coef = ppo_cfg.kl_coef
  iteration = 0
  if restored is not None:
    tree = restored.state
    roles.policy = {"step": tree["policy_step"], "params": tree["params"],
                    "opt_state": tree["opt_state"]}
    roles.value = tree.get("value")
    kl_coef = float(jax.device_get(tree["kl_coef"]))
    iteration = restored.step
    metrics.log_console(f"Resumed PPO at iteration {iteration} (KL coefficient {kl_coef:.4g}) in "
                        f"{cfg.run_dir}")
  else:
    metrics.log_console(f"Starting PPO from iteration 0 in {cfg.run_dir}")
  jsonl_path = os.path.join(cfg.run_dir, "metrics.jsonl")
  metrics.cut_jsonl(jsonl_path, iteration)
  if iteration >= cfg.steps:
    metrics.log_console(f"PPO already reached TrainConfig.steps={cfg.steps}; raise it to train "
                        "further.")
    mngr.close()
    return []

  stream = prompts_lib.PromptStream(_prompt_pools(data_cfg, vocab, "train", ppo_cfg),
                                    ppo_cfg.rollout_batch, cfg.seed,
                                    [rate for _, rate in data_cfg.sources])
  per_iteration = ppo_cfg.epochs * ppo_cfg.minibatches
  streams = {name: _anchor_batches(name, anchors[name], vocab, cfg, iteration * per_iteration)
             for name in train_anchors}
  rollouts = Rollouts(roles, ppo_cfg, settings, vocab, mesh, rules)
  held_out = None
  writer = metrics.Writer(os.path.join(cfg.run_dir, "tensorboard"), jsonl_path)
  stop = faults.StopAgreement()
  history, started = [], None

  def save(force: bool = False):
    checkpoints.save(mngr, _checkpoint_tree(iteration, roles, kl_coef), data_position=iteration,
                     model_cfg=model_cfg, gin_text=gin_text, force=force)

  def held_out_eval():
    nonlocal held_out
    if held_out is None:
      held_out = _held_out(ppo_cfg, data_cfg, anchors, vocab, cfg)
    values = evaluate(rollouts, held_out, anchor_objectives, anchor_evals, cfg.seed, mesh, rules)
    metrics.log_console(eval_line(iteration, values))
    writer.scalars(iteration, values, prefix="eval/")
    history.append({"step": iteration, "kind": "eval", **values})

  with checkpoints.finishing(mngr):
    try:
      if cfg.eval_every and iteration == 0:
        held_out_eval()  # the starting point: the SFT model itself
      while iteration < cfg.steps:
        prompts = stream.batch(iteration)
        iteration += 1
        rows, scored, timings, _ = rollouts(prompts, _iteration_seed(cfg.seed, iteration), kl_coef)
        values = rollout.rollout_metrics(rows, scored, kl_coef)
        trained = time.perf_counter()
        rollout_rows = {**{k: rows[k] for k in ("tokens", "positions", "segment_ids",
                                                "reply_mask")},
                        **{k: scored[k] for k in TRAIN_FIELDS if k in scored}}
        step_metrics = []
        for epoch in range(ppo_cfg.epochs):
          order = np.random.default_rng([cfg.seed, iteration, epoch]).permutation(
              ppo_cfg.rollout_batch)
          for index in np.split(order, ppo_cfg.minibatches):
            batch = {"ppo": _minibatch(rollout_rows, index)}
            for name in train_anchors:
              batch[name] = _with_norm(name, next(streams[name]))
            roles.policy, policy_metrics = policy_step(roles.policy, _placed(batch, mesh, rules),
                                                       {}, policy_schedule)
            step_metrics.append(_prefixed(policy_metrics, "policy"))
            if value_step is not None:
              roles.value, value_metrics = value_step(
                  roles.value, _placed({"ppo": batch["ppo"]}, mesh, rules), {}, value_schedule)
              step_metrics[-1].update(_prefixed(value_metrics, "value"))
        values.update(_mean_metrics(step_metrics))
        timings["time/train"] = time.perf_counter() - trained
        values.update(timings)
        if ppo_cfg.kl_target is not None:
          kl_coef = adaptive_kl_coef(kl_coef, values["kl/sequence"], ppo_cfg.kl_target,
                                     ppo_cfg.kl_horizon, ppo_cfg.rollout_batch)
        values["kl/next_coef"] = kl_coef
        if started is None:
          started = (iteration, time.perf_counter())  # the first iteration compiles: not timed
        elif iteration > started[0]:
          per = (time.perf_counter() - started[1]) / (iteration - started[0])
          values["perf/iteration_seconds"] = per
          values["perf/eta_seconds"] = per * (cfg.steps - iteration)
          values["perf/rollout_tokens_per_second"] = (
              float(rows["reply_mask"].sum()) / max(timings["time/generate"], 1e-9))
        if iteration % cfg.log_every == 0 or iteration == cfg.steps:
          metrics.log_console(progress_line(iteration, cfg.steps, values))
        writer.scalars(iteration, values, prefix="train/")
        history.append({"step": iteration, "kind": "train", **values})
        if cfg.eval_every and (iteration % cfg.eval_every == 0 or iteration == cfg.steps):
          held_out_eval()
          started = (iteration, time.perf_counter())
        if loop.saved_or_stopped(iteration, cfg, stop, save, mngr, history, "PPO iteration"):
          break
    finally:
      stop.close()
      writer.close()
  return history


def _placed(batch: dict, mesh, rules) -> dict:
  return {name: parallel.global_batch(part, mesh, rules) for name, part in batch.items()}


def _prefixed(step_metrics: dict, role: str) -> dict:
  """A step's metrics under the role's name: its 'loss' (the whole objective) as
  '<role>/objective', grad_norm and skipped as '<role>/grad_norm', '<role>/skipped'."""
  renamed = {"loss": "objective", "grad_norm": "grad_norm", "skipped": "skipped"}
  return {(f"{role}/{renamed[k]}" if k in renamed else k): v for k, v in step_metrics.items()}


def _mean_metrics(records: list[dict]) -> dict:
  host = [metrics.to_host(r) for r in records]
  return {k: float(np.mean([r[k] for r in host])) for k in host[0]}


def _prompt_pools(data_cfg, vocab, split: str, ppo_cfg: PPOConfig) -> list[list]:
  with logs.native_noise_filtered():
    return [prompts_lib.read_prompts(source, vocab, split, max_prompt_len=ppo_cfg.max_prompt_len)
            for source, _ in data_cfg.sources]


def _held_out(ppo_cfg: PPOConfig, data_cfg, anchors: dict, vocab, cfg) -> dict:
  """The eval prompts (the first of each source's validation split, in the mixture's shares)
  and the anchors' held-out batches."""
  pools = _prompt_pools(data_cfg, vocab, "validation", ppo_cfg)
  rows = prompts_lib.mixture_rows(ppo_cfg.eval_prompts, [rate for _, rate in data_cfg.sources])
  prompts = [p for pool, n in zip(pools, rows) for p in pool[:n]]
  with logs.native_noise_filtered():
    batches = {name: pipeline.eval_batches(anchor_cfg, vocab, seq_len=cfg.seq_len,
                                           global_batch=cfg.global_batch,
                                           num_batches=cfg.eval_batches)
               for name, anchor_cfg in anchors.items()}
  return {"prompts": prompts, "batches": batches}


def evaluate(rollouts: Rollouts, held_out: dict, objectives: dict, eval_fns: dict, seed: int,
             mesh, rules) -> dict:
  """Held-out metrics of the current policy (see the module docstring)."""
  prompts = held_out["prompts"]
  rows, scored, _, samples = rollouts(prompts, seed, 0.0)
  values = {k: v for k, v in rollout.rollout_metrics(rows, scored, 0.0).items()
            if k.startswith(("reward/raw", "reward/score", "kl/sequence", "reply/"))}
  values["reply/reference_match"] = reference_match(rollouts.vocab, prompts, samples)
  for name, batches in held_out["batches"].items():
    scores = loop.evaluate(eval_fns[name], objectives[name], rollouts.roles.policy["params"],
                           batches, mesh, rules)
    values.update({f"{name}/{k}": v for k, v in scores.items()
                   if k == "loss" or k.endswith("/loss")})
  return values


def progress_line(iteration: int, total: int, values: dict) -> str:
  parts = [f"ppo {iteration}/{total}", f"reward {values['reward/score']:.3f} "
           f"(raw {values['reward/raw']:.3f})",
           f"KL {values['kl/sequence']:.3f} (coef {values['kl/coef']:.3g})",
           f"len {values['reply/length']:.1f} eop {values['reply/eop_rate']:.0%}",
           f"clip {values['policy/clipfrac']:.3f}",
           f"value EV {values['value/explained_variance']:.2f}"]
  parts += [f"{name} {values[f'{name}/loss']:.3f}" for name in ANCHORS
            if f"{name}/loss" in values]
  parts.append("gen {:.1f}s score {:.1f}s train {:.1f}s".format(
      values["time/generate"], values["time/score"], values["time/train"]))
  if "perf/eta_seconds" in values:
    parts.append(f"{values['perf/rollout_tokens_per_second']:,.0f} rollout tok/s")
    parts.append(f"ETA {metrics.format_duration(values['perf/eta_seconds'])}")
  return " | ".join(parts)


def eval_line(iteration: int, values: dict) -> str:
  parts = [f"eval @ {iteration}", f"reward {values['reward/score']:.3f}",
           f"KL {values['kl/sequence']:.3f}", f"len {values['reply/length']:.1f}",
           f"eop {values['reply/eop_rate']:.0%}",
           f"reference match {values['reply/reference_match']:.1%}"]
  parts += [f"{k} {v:.3f}" for k, v in values.items() if k.startswith(ANCHORS)]
  return " | ".join(parts)
