"""Where an evaluation's results go: JSON beside the checkpoint's run, scalars to its TensorBoard.

A task evaluating checkpoint RUN/checkpoints/STEP writes RUN/eval/{name}-{STEP}.json and its
scalars at step STEP under RUN/tensorboard, so a run's evaluations sit beside its training curves.
"""

import json
import os

from etils import epath

from batgpt_jax.train import metrics


def write(source: str, name: str, results: dict, scalars: dict[str, float], prefix: str) -> str:
  """Writes `results` and `scalars` for `source` (checkpoints_dir/step); returns the JSON path."""
  checkpoints_dir, step = os.path.split(source)
  run_dir = epath.Path(checkpoints_dir).parent
  out = run_dir / "eval" / f"{name}-{step}.json"
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, ensure_ascii=False, indent=1))
  writer = metrics.Writer(str(run_dir / "tensorboard"))
  writer.scalars(int(step), scalars, prefix=prefix)
  writer.close()
  return str(out)
