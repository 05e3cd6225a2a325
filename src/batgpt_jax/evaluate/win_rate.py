"""Win rate of one checkpoint's replies against another's, each pair judged in both orders.

`batgpt eval --task=win_rate --checkpoint=A --baseline=B --judge=J [--judge_kind=reward|labeller]`
generates A's and B's replies to every prompt of a prompt set (`evaluate/generation.py`: the
same records, the same templates and engine; answers are not needed), then asks the judge which
reply is better, once with A's reply first and once with B's first:
  reward:   a pairwise reward model (`align/reward_score.py`); P(first better) =
            sigmoid(r_first - r_second) from the pair scored as (first, second).
  labeller: a decoder asked the AI labeller's question (`align/label.py`: its gin template,
            its teacher-forced "A" or "B"); P(first better) = its P(A).
Each order is a verdict for A: a win (1) when A's reply is judged better, a loss (0) when worse,
a tie (1/2) when the judge is indifferent or the two replies are the same text. A prompt's score
is the mean of its two verdicts, so a judge that always prefers whatever it sees first scores
every prompt 1/2; the win rate is the mean over prompts. Judging both orders makes the rate
antisymmetric: swapping A and B gives exactly 1 - the win rate, and A against itself gives 1/2.
Reported beside it: the soft win rate (mean P(A better) over both orders) and the share of
prompts whose verdict flips with the order (the judge's position bias).

Results: JSON to A's RUN/eval/win_rate-vs-{B's run}-{step}.json (every prompt's replies and
verdicts) and the scalars to A's TensorBoard.
"""

import contextlib
import dataclasses
from typing import Callable, Sequence

import gin
import numpy as np

JUDGE_KINDS = ("reward", "labeller")
# (first replies, second replies) -> P(first better) per prompt, in [0, 1]
OrderJudge = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class WinRateConfig:
  """How `--task=win_rate` judges; the prompts and the replies are GenerationConfig's."""

  judge_kind: str = "reward"  # 'reward' | 'labeller'
  seq_len: int = 512  # the judge's row length: a prompt and both replies must fit
  batch_size: int = 16  # judge rows a call

  def __post_init__(self):
    if self.judge_kind not in JUDGE_KINDS:
      raise ValueError(f"WinRateConfig.judge_kind={self.judge_kind!r}; expected one of "
                       f"{JUDGE_KINDS}.")
    if self.seq_len < 8 or self.batch_size < 1:
      raise ValueError(f"WinRateConfig: seq_len={self.seq_len}, batch_size={self.batch_size}; "
                       "need seq_len >= 8 and batch_size >= 1.")


def verdicts(p_first: np.ndarray) -> np.ndarray:
  """1 (the first reply wins), 1/2 (a tie) or 0 from P(first better)."""
  p_first = np.asarray(p_first, np.float64)
  return np.where(p_first > 0.5, 1.0, np.where(p_first < 0.5, 0.0, 0.5))


def judged(replies_a: Sequence[str], replies_b: Sequence[str], judge: OrderJudge) -> dict:
  """Both orders' verdicts for A and their summary (see the module docstring)."""
  if len(replies_a) != len(replies_b):
    raise ValueError(f"{len(replies_a)} replies of A but {len(replies_b)} of B.")
  same = np.array([a == b for a, b in zip(replies_a, replies_b)])
  p_a_first = np.asarray(judge(replies_a, replies_b), np.float64)
  p_b_first = np.asarray(judge(replies_b, replies_a), np.float64)
  # A's verdict in each order; the same text is a tie whatever the judge's rounding says.
  first = np.where(same, 0.5, verdicts(p_a_first))
  second = np.where(same, 0.5, 1.0 - verdicts(p_b_first))
  scores = (first + second) / 2
  soft = np.where(same, 0.5, (p_a_first + (1.0 - p_b_first)) / 2)
  return {"win_rate": float(scores.mean()), "soft_win_rate": float(soft.mean()),
          "wins": int(np.sum(scores == 1.0)), "losses": int(np.sum(scores == 0.0)),
          "ties": int(np.sum((scores != 1.0) & (scores != 0.0))),
          "order_flips": float(np.mean((first != second) & ~same)),
          "per_prompt": {"score": scores.tolist(), "p_a_first": p_a_first.tolist(),
                         "p_b_first": p_b_first.tolist()}}


def _pairs(prompts, first: Sequence[str], second: Sequence[str]):
  from batgpt_jax.data import preferences  # pylint: disable=import-outside-toplevel
  return [preferences.Pair((), p.prompt, x, y, p.system) for p, x, y in zip(prompts, first, second)]


def reward_judge(model, vocabulary, prompts, cfg: WinRateConfig) -> OrderJudge:
  """P(first better) = sigmoid(r_first - r_second), the pair scored as (first, second)."""
  from batgpt_jax.align import reward_score  # pylint: disable=import-outside-toplevel

  def judge(first, second):
    with _seq_len_named(cfg):
      rewards = reward_score.score_pairs(model, vocabulary, _pairs(prompts, first, second),
                                         seq_len=cfg.seq_len, batch=cfg.batch_size)
    return reward_score.preference_probability(rewards)

  return judge


@contextlib.contextmanager
def _seq_len_named(cfg: WinRateConfig):
  """The judges' "does not fit" errors name their own flag; here the setting is gin's."""
  try:
    yield
  except ValueError as err:
    raise ValueError(f"{err} For win_rate the row length is WinRateConfig.seq_len "
                     f"(now {cfg.seq_len}).") from None


def labeller_judge(judge_model, prompts, template: str, cfg: WinRateConfig) -> OrderJudge:
  """P(first better) = the labeller's P(A) with the first reply shown as answer A."""
  from batgpt_jax.align import label  # pylint: disable=import-outside-toplevel

  def judge(first, second):
    questions = [label.judge_prompts(pair, template)[0]
                 for pair in _pairs(prompts, first, second)]
    with _seq_len_named(cfg):
      return np.asarray(judge_model(questions))

  return judge


def load_judge(path: str, kind: str, vocabulary, prompts, cfg: WinRateConfig, *,
               vocab_path: str | None = None, mesh=None, rules=()) -> tuple[OrderJudge, str]:
  """The judge of `kind` from the checkpoint at `path`, and the checkpoint's step directory."""
  # pylint: disable=import-outside-toplevel
  from batgpt_jax.align import label, reward_score
  from batgpt_jax.model import heads
  if kind == "reward":
    model = reward_score.load(path, mesh=mesh, rules=rules)
    return reward_judge(model, vocabulary, prompts, cfg), model.source
  # The labeller is a decoder: its heads (if it was trained as something else) are dropped.
  from batgpt_jax.sample import options
  loaded = options.load(path, vocab_path=vocab_path, mesh=mesh, rules=rules)
  params = heads.decoder_params(loaded.params)
  judge_model = label.model_judge(loaded.cfg, params, vocabulary, seq_len=cfg.seq_len,
                                  batch=cfg.batch_size)
  return (labeller_judge(judge_model, prompts, label.judge_settings()["template"], cfg),
          loaded.source)


def evaluate(loaded_a, loaded_b, judge: OrderJudge, prompts, generation_cfg) -> dict:
  """A's replies against B's on `prompts`, judged by `judge` in both orders."""
  from batgpt_jax.evaluate import generation  # pylint: disable=import-outside-toplevel
  replies_a = generation.replies(loaded_a, prompts, generation_cfg)
  replies_b = generation.replies(loaded_b, prompts, generation_cfg)
  out = judged(replies_a, replies_b, judge)
  per = out.pop("per_prompt")
  out["prompts"] = [{"prompt": p.prompt, "category": p.category, "reply_a": a, "reply_b": b,
                     "score": s, "p_a_first": pa, "p_b_first": pb}
                    for p, a, b, s, pa, pb in zip(prompts, replies_a, replies_b, per["score"],
                                                  per["p_a_first"], per["p_b_first"])]
  return out


def add_flags(parser) -> None:
  parser.add_argument("--baseline", default=None,
                      help="win_rate: the checkpoint whose replies --checkpoint's are judged "
                           "against (a run, checkpoints or step directory)")
  parser.add_argument("--judge", default=None,
                      help="win_rate: the judge's checkpoint: a reward model, or a decoder for "
                           "--judge_kind=labeller")
  parser.add_argument("--judge_kind", choices=JUDGE_KINDS, default=None,
                      help="win_rate: the judge (default WinRateConfig.judge_kind)")


def run(args, gin_text: str) -> int:
  """The `--task=win_rate` branch of `batgpt eval`."""
  del gin_text
  # pylint: disable=import-outside-toplevel
  import pathlib
  from batgpt_jax.evaluate import generation, results as results_lib
  from batgpt_jax.sample import options
  from batgpt_jax.train import metrics
  if not args.baseline or not args.judge:
    raise ValueError("--task=win_rate needs --baseline (the checkpoint to compare against) and "
                     "--judge (a reward model, or a decoder with --judge_kind=labeller).")
  cfg = WinRateConfig()
  if args.judge_kind:
    cfg = dataclasses.replace(cfg, judge_kind=args.judge_kind)
  generation_cfg = generation.config_from_flags(args)
  prompts = generation.read_prompts(generation_cfg.prompt_file, need_answers=False,
                                    categories=generation_cfg.categories)
  mesh, rules = options.mesh_and_rules()
  loaded_a = options.load_from_flags(args)
  loaded_b = options.load(args.baseline, vocab_path=args.vocab, mesh=mesh, rules=rules)
  judge, judge_source = load_judge(args.judge, cfg.judge_kind, loaded_a.vocabulary, prompts, cfg,
                                   vocab_path=args.vocab, mesh=mesh, rules=rules)
  out = {"a": loaded_a.source, "b": loaded_b.source, "judge": judge_source,
         "judge_kind": cfg.judge_kind, "set": str(generation_cfg.prompt_file),
         "template": generation_cfg.template,
         **evaluate(loaded_a, loaded_b, judge, prompts, generation_cfg)}
  metrics.log_console(
      f"Win rate of {loaded_a.source} against {loaded_b.source} ({cfg.judge_kind} judge "
      f"{judge_source}, {len(prompts)} prompts, both orders): {out['win_rate']:.1%} "
      f"(soft {out['soft_win_rate']:.1%}; {out['wins']} won, {out['ties']} tied, "
      f"{out['losses']} lost; verdict flipped with the order on {out['order_flips']:.0%})")
  baseline_run = pathlib.Path(loaded_b.source).parent.parent.name
  path = results_lib.write(loaded_a.source, f"win_rate-vs-{baseline_run}", out,
                           {"win_rate": out["win_rate"], "soft_win_rate": out["soft_win_rate"],
                            "order_flips": out["order_flips"]}, f"eval_win_rate/{baseline_run}/")
  metrics.log_console(f"Wrote {path}")
  return 0
