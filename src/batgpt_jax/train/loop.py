"""The one training loop, for every objective: data, steps, eval, metrics, checkpoints, faults.

`TrainConfig.objective` names the loss (objectives/); the loop around it is the same for
pretraining, instruction tuning, the reward model and DPO. A run resumes from its own newest
checkpoint; a new run may start from another run's parameters (`TrainConfig.init_from`) with a
fresh optimizer at step 0. An objective's scalar heads (the reward head) are part of the trained
parameters; one that the init_from checkpoint lacks is created fresh, and the log says so. An
objective's frozen roles (DPO's 'reference') are read, every start and resume, from
`TrainConfig.reference_from` (default: init_from) into the parameter shardings, with no optimizer
state, and passed to every step as `frozen`. A reward model's checkpoints carry the mean and std
of its scores on the held-out split (its calibration split) from the latest evaluation, which
`batgpt reward score` normalises with.
"""

import dataclasses
import itertools
import logging
import os

import gin
import jax
import numpy as np

from batgpt_jax import checkpoints, logs, objectives, parallel
from batgpt_jax.data import pipeline
from batgpt_jax.model import config as model_config
from batgpt_jax.model import heads as model_heads
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.train import faults, metrics, run_lock, state as train_state, step as train_step


@gin.configurable
@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One run: where it writes, how long it trains, and how often it logs, evaluates and saves."""

  run_dir: str = "runs/default"
  steps: int = 1000
  global_batch: int = 16  # sequences per optimizer step, over all hosts
  seq_len: int = 256
  microbatches: int = 1  # gradient accumulation: global_batch is split into this many
  loss_chunk: int = 0  # >0: cross-entropy over chunks of this many positions (large vocabularies)
  seed: int = 0
  log_every: int = 10
  eval_every: int = 100
  eval_batches: int = 4
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  async_checkpoint: bool = True
  checkpoint_timeout_s: int = 1200  # an async save still unfinished after this stops the run
  max_bad_steps: int = 10  # stop after this many non-finite steps in a row (0: never stop)
  objective: str = "pretrain"  # a name in objectives.OBJECTIVES: 'pretrain' | 'sft' | ...
  init_from: str | None = None  # a run, checkpoints or step dir whose parameters start this run
  reference_from: str | None = None  # the frozen reference's checkpoint (None: init_from)

  def __post_init__(self):
    if self.objective not in (*objectives.OBJECTIVES, *objectives.OUTER_LOOPS):
      objectives.build(self.objective, None)  # raises, naming the valid objectives
    if self.steps < 1:
      raise ValueError(f"TrainConfig.steps={self.steps} trains nothing: it is the step to train "
                       "to (resuming included); set it to at least 1, e.g. "
                       "--gin.TrainConfig.steps=1000.")
    if self.global_batch % self.microbatches:
      raise ValueError(f"TrainConfig.global_batch={self.global_batch} is not divisible by "
                       f"microbatches={self.microbatches}; choose a divisor of the batch.")


def _check_vocabulary(vocab, model_cfg: ModelConfig) -> None:
  if vocab.vocab_size > model_cfg.vocab_size:
    raise ValueError(
        f"The tokenizer has {vocab.vocab_size} pieces but ModelConfig.vocab_size is "
        f"{model_cfg.vocab_size}: token ids would fall outside the embedding. Set "
        f"ModelConfig.vocab_size >= {vocab.vocab_size} or use a smaller tokenizer.")


def evaluate(eval_fn, objective, params, batches, mesh, rules, frozen=None) -> dict:
  total = None
  for local in batches:
    sums = eval_fn(params, parallel.global_batch(local, mesh, rules), frozen or {})
    total = sums if total is None else jax.tree.map(np.add, total, sums)
  total = metrics.to_host(total)
  loss_sum, weight_total = total.pop("loss_sum"), total.pop("weight_total")
  return metrics.to_host(objective.summarize(loss_sum, weight_total, total))


def _read_checked(source: str, setting: str, model_cfg: ModelConfig, shardings: dict,
                  heads=()) -> tuple[dict, str]:
  """(parameters, 'dir/step') of a checkpoint whose decoder (and `heads`) are this model's.

  The checkpoint's other heads are left unread (a value model from a reward run's decoder)."""
  directory, step = checkpoints.find_step(source)
  saved_cfg, _ = checkpoints.read_config(directory, step)
  unwanted = tuple(f"{h}/" for h in model_heads.HEADS if h not in heads)
  saved = {name: shape for name, shape in checkpoints.param_shapes(directory, step).items()
           if not name.startswith(unwanted)}
  diffs = checkpoints.shape_differences(saved, model_heads.abstract_params(model_cfg, heads))
  if diffs:
    raise checkpoints.CheckpointMismatchError(
        f"TrainConfig.{setting}={source!r} ({directory}/{step}) holds parameters of another "
        f"shape:\n  " + "\n  ".join(diffs[:20])
        + "\nUse the model gin file it was trained with (its model: "
          f"{model_config.describe(saved_cfg)}), or `batgpt grow` it to this size first.")
  wanted = {key: value for key, value in shardings.items()
            if key not in model_heads.HEADS or key in heads}
  return checkpoints.read_params(directory, step, wanted), f"{directory}/{step}"


def initial_params(source: str, model_cfg: ModelConfig, shardings: dict, heads=(),
                   seed: int = 0) -> dict:
  """The parameters of another run's (or an imported) checkpoint, for `TrainConfig.init_from`.

  `heads` (in `shardings` too) are read when the checkpoint has them and created fresh when it
  has none (a reward model from an SFT checkpoint). Refused, naming every parameter that
  differs, when the shapes are not this model's.
  """
  directory, step = checkpoints.find_step(source)
  saved = checkpoints.param_shapes(directory, step)
  new = tuple(h for h in heads if not any(name.startswith(h + "/") for name in saved))
  params, where = _read_checked(source, "init_from", model_cfg, shardings,
                                tuple(h for h in heads if h not in new))
  metrics.log_console(f"Initialised the parameters from {where} (fresh optimizer, step 0)")
  if new:
    params.update(jax.jit(lambda: model_heads.init_heads(model_cfg, seed, new),
                          out_shardings={h: shardings[h] for h in new})())
    metrics.log_console(f"The checkpoint has no {', '.join(new)}: initialised it fresh "
                        f"(kernel ~ N(0, {model_heads.init_std(model_cfg):.3g}^2), bias 0, seed "
                        f"{seed})")
  return params


def frozen_params(cfg: TrainConfig, roles, model_cfg: ModelConfig, shardings: dict) -> dict:
  """{role: parameters} of the objective's frozen roles, in the decoder's `shardings`."""
  frozen = {}
  for role in roles:
    source = cfg.reference_from or cfg.init_from
    if role != "reference" or not source:
      raise ValueError(f"TrainConfig.objective={cfg.objective!r} needs the frozen {role!r} model "
                       "but no checkpoint names it: set TrainConfig.reference_from (or "
                       "TrainConfig.init_from, its default) to the run to align from.")
    frozen[role], where = _read_checked(source, "reference_from" if cfg.reference_from
                                        else "init_from", model_cfg, shardings)
    metrics.log_console(f"Frozen {role} model from {where} (no optimizer state)")
  return frozen


def train(cfg: TrainConfig, model_cfg: ModelConfig, data_cfg: pipeline.DataConfig,
          mesh_cfg: parallel.MeshConfig, opt_cfg: train_state.OptimizerConfig,
          gin_text: str = "") -> list[dict]:
  """Trains (or resumes) to `cfg.steps`. Returns the logged train and eval records.

  After a preemption notice (or Ctrl-C) the last record is {'kind': 'preempted', 'step': ...}.
  The run directory is locked for the whole run (`run_lock`): a second job into it is refused.
  `TrainConfig.objective = 'ppo'` runs PPO's outer loop (align/ppo.py) around the same step.
  """
  run = _train
  if cfg.objective == "ppo":
    from batgpt_jax.align import ppo  # pylint: disable=import-outside-toplevel  (it imports us)
    run = ppo.train
  lock = run_lock.RunLock(cfg.run_dir) if jax.process_index() == 0 else None
  if lock is not None:
    lock.acquire()
  try:
    return run(cfg, model_cfg, data_cfg, mesh_cfg, opt_cfg, gin_text)
  finally:
    if lock is not None:
      lock.release()


def saved_or_stopped(step: int, cfg: TrainConfig, stop: faults.StopAgreement, save, mngr,
                     history: list, unit: str = "step") -> bool:
  """The end of a step (or a PPO iteration): after a preemption notice, save, wait, say so and
  record it (True: stop); otherwise the periodic save (forced at the last step)."""
  if stop.reached(step):
    save(force=True)
    checkpoints.wait(mngr)
    logging.warning("Saved %s %d after a preemption notice (SIGTERM) or Ctrl-C; exiting. Run the "
                    "same command again to resume.", unit, step)  # every host says so
    history.append({"step": step, "kind": "preempted"})
    return True
  if step % cfg.checkpoint_every == 0 or step == cfg.steps:
    save(force=step == cfg.steps)
  return False


def _train(cfg: TrainConfig, model_cfg: ModelConfig, data_cfg: pipeline.DataConfig,
           mesh_cfg: parallel.MeshConfig, opt_cfg: train_state.OptimizerConfig,
           gin_text: str) -> list[dict]:
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  parallel.log_mesh(mesh)
  metrics.log_console(f"Model: {model_config.describe(model_cfg)}")
  objective = objectives.build(cfg.objective, model_cfg, cfg.loss_chunk)

  vocab = pipeline.vocabulary_for(data_cfg)
  _check_vocabulary(vocab, model_cfg)
  tx = train_state.make_optimizer(opt_cfg, cfg.steps)
  schedule = train_state.schedule_numbers(opt_cfg, cfg.steps)
  abstract = train_state.abstract_state(model_cfg, tx, objective.heads)
  shardings = train_state.state_shardings(model_cfg, tx, mesh, rules, abstract, objective.heads)
  frozen_shardings = {role: train_state.param_shardings(model_cfg, mesh, rules)
                      for role in objective.frozen_roles}

  mngr = checkpoints.manager(os.path.join(cfg.run_dir, "checkpoints"),
                             keep=cfg.keep_checkpoints, async_save=cfg.async_checkpoint,
                             timeout_s=cfg.checkpoint_timeout_s)
  data_key = pipeline.resume_key(data_cfg, vocab, seq_len=cfg.seq_len,
                                 global_batch=cfg.global_batch)
  restored = checkpoints.restore_latest(mngr, abstract, shardings, model_cfg, gin_text,
                                        move_aside=True, data_key=data_key)
  if restored is None:
    params = (initial_params(cfg.init_from, model_cfg, shardings["params"], objective.heads,
                             cfg.seed) if cfg.init_from else None)
    state = train_state.create_state(model_cfg, tx, mesh, rules, cfg.seed, params=params,
                                     heads=objective.heads)[0]
    position, skipped_before = 0, 0
    metrics.log_console(f"Starting from step 0 in {cfg.run_dir}")
  else:
    state, position = restored.state, restored.data_position
    skipped_before = restored.skipped_steps
    metrics.log_console(f"Resumed from checkpoint step {restored.step} (data position "
                        f"{position}) in {cfg.run_dir}")
  jsonl_path = os.path.join(cfg.run_dir, "metrics.jsonl")
  start_step = restored.step if restored else 0
  dropped = metrics.cut_jsonl(jsonl_path, start_step)
  if dropped:
    metrics.log_console(f"Dropped {dropped} records after step {start_step} from {jsonl_path}: "
                        "those steps run again now")

  frozen = frozen_params(cfg, objective.frozen_roles, model_cfg,
                         train_state.param_shardings(model_cfg, mesh, rules))
  device_schedule = train_state.placed_schedule(schedule, mesh)
  train_fn, eval_fn = train_step.jit_steps(objective, tx, mesh, rules, shardings,
                                           microbatches=cfg.microbatches,
                                           frozen_shardings=frozen_shardings)
  step = int(jax.device_get(state["step"]))
  if step >= cfg.steps:
    metrics.log_console(f"Training already reached TrainConfig.steps={cfg.steps}; raise it "
                        f"(e.g. --gin.TrainConfig.steps={max(2 * step, step + 100)}) to train "
                        "further.")
    mngr.close()
    return []

  resume = restored.data_state if restored else None
  if position and resume is None:
    metrics.log_console(f"The checkpoint has no input state for this data config: reading and "
                        f"packing its first {position} batches again to resume exactly")
  with logs.native_noise_filtered():  # the first batch starts the tokenizer ops
    inputs = pipeline.train_batches(data_cfg, vocab, seq_len=cfg.seq_len,
                                    global_batch=cfg.global_batch, start_position=position,
                                    resume=resume)
    batches = itertools.chain([next(inputs)], inputs)
  eval_set = None
  writer = metrics.Writer(os.path.join(cfg.run_dir, "tensorboard"), jsonl_path)
  throughput = metrics.Throughput(cfg.global_batch * cfg.seq_len, cfg.steps,
                                  metrics.train_flops_per_token(model_cfg, cfg.seq_len),
                                  metrics.peak_flops(mesh.devices.flat[0], mesh.size))
  stop = faults.StopAgreement()
  bad_steps = faults.NonFiniteSteps(cfg.max_bad_steps, skipped_before)
  history = []
  compiled = False
  calibration = None  # a reward model's held-out score mean and std, saved with its checkpoints

  def save(force: bool = False):
    bad_steps.flush()  # the count saved includes this step
    checkpoints.save(mngr, state, data_position=position, model_cfg=model_cfg,
                     gin_text=gin_text, force=force, skipped_steps=bad_steps.total,
                     calibration=calibration, data_state=inputs.state(), data_key=data_key)

  with checkpoints.finishing(mngr):
    try:
      while step < cfg.steps:
        # `inputs` reads nothing ahead of the batch taken here, so its state() at a save is the
        # state after the last batch trained on.
        state, step_metrics = train_fn(state, parallel.global_batch(next(batches), mesh, rules),
                                       frozen, device_schedule)
        step, position = step + 1, position + 1
        bad_steps.observe(step, step_metrics["skipped"])
        if not compiled:
          jax.block_until_ready(step_metrics)  # exclude compilation from tokens/s
          throughput.start(step)
          compiled = True
        if step % cfg.log_every == 0 or step == cfg.steps:
          bad_steps.flush()
          values = metrics.to_host(step_metrics)
          values["learning_rate"] = float(train_state.learning_rate(step - 1, schedule))
          values["skipped_steps"] = bad_steps.total
          perf = throughput.report(step)
          metrics.log_console(metrics.progress_line(step, cfg.steps, values, perf))
          writer.scalars(step, {**values, **perf}, prefix="train/")
          history.append({"step": step, "kind": "train", **values, **perf})
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
          if eval_set is None:
            with logs.native_noise_filtered():
              eval_set = pipeline.eval_batches(data_cfg, vocab, seq_len=cfg.seq_len,
                                               global_batch=cfg.global_batch,
                                               num_batches=cfg.eval_batches)
          values = evaluate(eval_fn, objective, state["params"], eval_set, mesh, rules, frozen)
          metrics.log_console(metrics.eval_line(step, values))
          if "reward_head" in objective.heads:
            calibration = {"mean": values["reward/mean"], "std": values["reward/std"],
                           "answers": 2 * values["pairs"], "step": step}
          writer.scalars(step, values, prefix="eval/")
          history.append({"step": step, "kind": "eval", **values})
          throughput.start(step)  # do not count eval time as training time
        if saved_or_stopped(step, cfg, stop, save, mngr, history):
          break
    finally:
      stop.close()
      writer.close()
  return history


def evaluate_checkpoint(cfg: TrainConfig, model_cfg: ModelConfig, data_cfg: pipeline.DataConfig,
                        mesh_cfg: parallel.MeshConfig, opt_cfg: train_state.OptimizerConfig,
                        gin_text: str = "") -> dict:
  """Per-direction loss and perplexity of the run's latest checkpoint on the held-out split."""
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  vocab = pipeline.vocabulary_for(data_cfg)
  _check_vocabulary(vocab, model_cfg)
  objective = objectives.build(cfg.objective, model_cfg, cfg.loss_chunk)
  tx = train_state.make_optimizer(opt_cfg, cfg.steps)
  abstract = train_state.abstract_state(model_cfg, tx, objective.heads)
  shardings = train_state.state_shardings(model_cfg, tx, mesh, rules, abstract, objective.heads)
  directory = os.path.join(cfg.run_dir, "checkpoints")
  mngr = checkpoints.manager(directory, keep=cfg.keep_checkpoints, async_save=False)
  try:
    restored = checkpoints.restore_latest(mngr, abstract, shardings, model_cfg, gin_text)
  finally:
    mngr.close()
  if restored is None:
    raise FileNotFoundError(f"No checkpoint in {directory}: train first, or set "
                            "TrainConfig.run_dir to the run to evaluate.")
  decoder_shardings = train_state.param_shardings(model_cfg, mesh, rules)
  frozen = frozen_params(cfg, objective.frozen_roles, model_cfg, decoder_shardings)
  _, eval_fn = train_step.jit_steps(
      objective, tx, mesh, rules, shardings, microbatches=cfg.microbatches,
      frozen_shardings={role: decoder_shardings for role in frozen})
  with logs.native_noise_filtered():
    batches = pipeline.eval_batches(data_cfg, vocab, seq_len=cfg.seq_len,
                                    global_batch=cfg.global_batch, num_batches=cfg.eval_batches)
  values = evaluate(eval_fn, objective, restored.state["params"], batches, mesh, rules, frozen)
  metrics.log_console(metrics.eval_line(restored.step, values))
  return {"step": restored.step, **values}
