"""How long a resumed run waits for its first batch: packer state vs. reading everything again.

  python benchmarks/data_resume_bench.py [--position=20000] [--skip_sample=1000]

The `bench` input shape (8 rows x 512 tokens, 8 data shards) on the embedded corpus with the
default vocabulary. Measures the time to the first batch at data position 0 and at `position`
for prepared data resumed from its packer state, checks that batch against the skip-ahead
oracle (which reads and packs every batch before it), and reports what the skip-ahead costs
today: measured in full for prepared data, and from the rate over `skip_sample` batches for the
raw-text pipeline (which re-tokenizes every document it skips). JSON under bench/results/.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

from batgpt_jax import logs

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results"
SEQ_LEN, BATCH = 512, 8


def _first_batch_s(cfg, vocabulary, **kwargs) -> tuple[float, dict, object]:
  from batgpt_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  batches = pipeline.train_batches(cfg, vocabulary, seq_len=SEQ_LEN, global_batch=BATCH,
                                   process_index=0, process_count=1, **kwargs)
  batch = next(batches)
  return time.perf_counter() - start, batch, batches


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--position", type=int, default=20_000)
  parser.add_argument("--skip_sample", type=int, default=1_000,
                      help="raw-text batches skipped to measure today's skip-ahead rate")
  parser.add_argument("--prepared", default=None, help="reuse a prepared corpus directory")
  args = parser.parse_args(argv)
  # pylint: disable=import-outside-toplevel
  from batgpt_jax.data import pipeline, prepared, tasks
  logs.setup_logging()
  raw_cfg = pipeline.DataConfig()
  with logs.native_noise_filtered():
    vocabulary = pipeline.vocabulary_for(raw_cfg)
    directory = args.prepared or tempfile.mkdtemp(prefix="batgpt-prepared-")
    started = time.perf_counter()
    if not args.prepared:
      prepared.prepare(tasks.DefaultCorpus(), vocabulary, directory)
    prepare_s = time.perf_counter() - started
  cfg = pipeline.DataConfig(sources=((prepared.Prepared(directory), 1.0),))
  n = args.position

  at_zero_s, _, _ = _first_batch_s(cfg, vocabulary)
  prepared_skip_s, expected, _ = _first_batch_s(cfg, vocabulary, start_position=n)  # oracle
  _, _, reader = _first_batch_s(cfg, vocabulary)  # a run that trained on batches 0..n-1
  reader.skip(n - 1)
  state = reader.state()
  resumed_s, got, _ = _first_batch_s(cfg, vocabulary, start_position=n, resume=state)
  same = all(np.array_equal(got[k], expected[k]) for k in expected)

  with logs.native_noise_filtered():
    raw_zero_s, _, raw = _first_batch_s(raw_cfg, vocabulary)
    started = time.perf_counter()
    raw.skip(args.skip_sample)
    raw_rate = args.skip_sample / (time.perf_counter() - started)  # batches/s
  summary = {
      "position": n, "batch": [BATCH, SEQ_LEN], "shards": BATCH,
      "prepare_seconds": round(prepare_s, 1),
      "prepared_first_batch_at_0_s": round(at_zero_s, 3),
      "prepared_first_batch_at_position_from_state_s": round(resumed_s, 3),
      "resumed_equals_skip_ahead": same,
      "packer_state_bytes": int(sum(v.nbytes for v in state.values())),
      "prepared_skip_ahead_to_position_s": round(prepared_skip_s, 1),
      "raw_first_batch_at_0_s": round(raw_zero_s, 3),
      "raw_skip_ahead_batches_per_s": round(raw_rate, 1),
      "raw_skip_ahead_to_position_s_estimated": round(n / raw_rate, 1),
  }
  rows = [("first batch at 0, prepared", at_zero_s),
          (f"first batch at {n:,}, prepared, from the packer state", resumed_s),
          (f"first batch at {n:,}, prepared, skip-ahead (measured)", prepared_skip_s),
          ("first batch at 0, raw text", raw_zero_s),
          (f"first batch at {n:,}, raw text, skip-ahead (from {args.skip_sample:,} batches)",
           n / raw_rate)]
  for name, seconds in rows:
    print(f"{name:<66} {seconds:10.2f} s")
  print(f"resumed batch equals the skip-ahead oracle's: {same}; packer state "
        f"{summary['packer_state_bytes']:,} bytes")
  RESULTS.mkdir(parents=True, exist_ok=True)
  out = RESULTS / f"data-resume-{time.strftime('%Y%m%d-%H%M%S')}.json"
  out.write_text(json.dumps(summary, indent=2))
  print(f"Wrote {out}")
  return 0 if same and resumed_s - at_zero_s < 2.0 else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
