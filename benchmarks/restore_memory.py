"""Peak host memory of a restore: a 2 x 4 checkpoint of the `bench` model onto 1 x 8 and 4 x 2.

  python benchmarks/restore_memory.py [--layouts=1x8,4x2] [--mesh='(1, -1, 1)']
      [--restore_concurrent_gb=N] [--limit=1.5]

Processes x fake CPU devices, joined with jax.distributed over 127.0.0.1 as in
launch/local_multihost.sh. The training state (params and Adam moments, gin/models/bench.gin:
58M parameters) is created and saved by 2 processes x 4 devices; then, for each layout, fresh
processes restore it with `checkpoints.restore_latest` into the shardings of their own mesh.
Reported per host: the state's bytes it holds (its addressable shards, replicas counted: each
fake device is host memory), the peak RSS increase during the restore (VmHWM, reset just
before, minus VmRSS then), and their ratio. The default mesh is FSDP over every device, where
each host holds only its share; `--mesh='(-1, 1, 1)'` (data parallel) replicates the state on
every device. Exits 1 when a ratio exceeds `--limit`.
"""

import argparse
import gc
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SAVED_LAYOUT = (2, 4)
RESULT = "RESULT "


def _args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--layouts", default="1x8,4x2", help="restore as PROCESSESxDEVICES, ...")
  parser.add_argument("--model", default="models/bench.gin", help="the model's gin file")
  parser.add_argument("--mesh", default="(1, -1, 1)", help="MeshConfig.shape of every layout")
  parser.add_argument("--restore_concurrent_gb", type=float, default=None,
                      help="passed to checkpoints.manager (default: its own default)")
  parser.add_argument("--limit", type=float, default=1.5, help="the largest ratio that passes")
  # One process of a layout (the script starts itself):
  parser.add_argument("--role", choices=("save", "restore"), help=argparse.SUPPRESS)
  parser.add_argument("--directory", help=argparse.SUPPRESS)
  parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


# --- one process ---------------------------------------------------------------------------------

def _rss_bytes(field: str) -> int:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
  # Linux: writing 5 resets VmHWM (the peak RSS) to the current RSS.
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")


def _state_setup(args):
  """(model config, gin text, mesh, optimizer, abstract state, shardings) for this process."""
  import jax  # pylint: disable=import-outside-toplevel
  if args.num_processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  from batgpt_jax import config, parallel  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import state as train_state  # pylint: disable=import-outside-toplevel
  gin_text = config.parse_gin([args.model, "mesh/cpu.gin"],
                              [f"MeshConfig.shape = {args.mesh}"])
  configs = config.run_configs()
  model_cfg, mesh_cfg = configs["model_cfg"], configs["mesh_cfg"]
  rules = parallel.check_rules(mesh_cfg.axis_rules)
  mesh = parallel.mesh_from_config(mesh_cfg)
  tx = train_state.make_optimizer(configs["opt_cfg"], configs["cfg"].steps)
  abstract = train_state.abstract_state(model_cfg, tx)
  shardings = train_state.state_shardings(model_cfg, tx, mesh, rules, abstract)
  return model_cfg, gin_text, mesh, rules, tx, abstract, shardings


def _manager(args, **kwargs):
  from batgpt_jax import checkpoints  # pylint: disable=import-outside-toplevel
  if args.restore_concurrent_gb is not None:
    kwargs["restore_concurrent_gb"] = args.restore_concurrent_gb
  return checkpoints.manager(args.directory, keep=1, async_save=False, **kwargs)


def save_state(args) -> None:
  from batgpt_jax import checkpoints  # pylint: disable=import-outside-toplevel
  from batgpt_jax.train import state as train_state  # pylint: disable=import-outside-toplevel
  model_cfg, gin_text, mesh, rules, tx, _, _ = _state_setup(args)
  state, _ = train_state.create_state(model_cfg, tx, mesh, rules, seed=0)
  mngr = _manager(args)
  checkpoints.save(mngr, state, data_position=0, model_cfg=model_cfg, gin_text=gin_text,
                   force=True)
  mngr.wait_until_finished()
  mngr.close()


def restore_state(args) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  from batgpt_jax import checkpoints  # pylint: disable=import-outside-toplevel
  model_cfg, gin_text, _, _, _, abstract, shardings = _state_setup(args)
  mngr = _manager(args)
  gc.collect()
  before = _rss_bytes("VmRSS")
  _reset_peak_rss()
  start = time.perf_counter()
  restored = checkpoints.restore_latest(mngr, abstract, shardings, model_cfg, gin_text)
  jax.block_until_ready(restored.state)
  seconds = time.perf_counter() - start
  peak = _rss_bytes("VmHWM")
  mngr.close()
  held = sum(shard.data.nbytes for leaf in jax.tree.leaves(restored.state)
             for shard in leaf.addressable_shards)
  print(RESULT + json.dumps({"process": args.process_id, "state_bytes": held,
                             "peak_increase": peak - before, "seconds": seconds}), flush=True)


# --- the driver ----------------------------------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_layout(role: str, processes: int, devices: int, args) -> list[dict]:
  """Runs `role` in `processes` fresh processes of `devices` fake CPU devices each."""
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if not f.startswith("--xla_force_host_platform_device_count"))
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}")
  port = _free_port()
  common = [sys.executable, __file__, f"--role={role}", f"--directory={args.directory}",
            f"--model={args.model}", f"--mesh={args.mesh}", f"--num_processes={processes}", f"--port={port}"]
  if args.restore_concurrent_gb is not None:
    common.append(f"--restore_concurrent_gb={args.restore_concurrent_gb}")
  procs = [subprocess.Popen(common + [f"--process_id={i}"], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(processes)]
  outputs = [proc.communicate(timeout=600)[0] for proc in procs]
  for i, (proc, output) in enumerate(zip(procs, outputs)):
    if proc.returncode:
      raise SystemExit(f"{role} on {processes}x{devices}: process {i} failed "
                       f"({proc.returncode}):\n{output[-3000:]}")
  return [json.loads(line[len(RESULT):]) for output in outputs
          for line in output.splitlines() if line.startswith(RESULT)]


def main(argv=None) -> int:
  args = _args(sys.argv[1:] if argv is None else argv)
  if args.role == "save":
    save_state(args)
    return 0
  if args.role == "restore":
    restore_state(args)
    return 0
  layouts = [tuple(int(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
  rows = []
  with tempfile.TemporaryDirectory() as work:
    args.directory = os.path.join(work, "checkpoints")
    print(f"saving {args.model} on {SAVED_LAYOUT[0]}x{SAVED_LAYOUT[1]}, mesh {args.mesh} ...",
          flush=True)
    run_layout("save", *SAVED_LAYOUT, args)
    for processes, devices in layouts:
      print(f"restoring on {processes}x{devices} ...", flush=True)
      for r in sorted(run_layout("restore", processes, devices, args),
                      key=lambda r: r["process"]):
        rows.append({"layout": f"{processes}x{devices}", **r,
                     "ratio": r["peak_increase"] / r["state_bytes"]})
  concurrency = ("manager default" if args.restore_concurrent_gb is None
                 else f"{args.restore_concurrent_gb} GB")
  print(f"\n{args.model}, mesh {args.mesh}, restore concurrency {concurrency}")
  print(f"{'layout':>6} {'host':>4} {'state MB':>9} {'peak RSS +MB':>13} {'ratio':>6} "
        f"{'restore s':>10}")
  for r in rows:
    print(f"{r['layout']:>6} {r['process']:>4} {r['state_bytes'] / 1e6:>9.1f} "
          f"{r['peak_increase'] / 1e6:>13.1f} {r['ratio']:>6.2f} {r['seconds']:>10.1f}")
  worst = max(r["ratio"] for r in rows)
  if worst > args.limit:
    print(f"FAIL: a host's peak RSS rose {worst:.2f}x its share of the state (limit "
          f"{args.limit}x)")
    return 1
  print(f"ok: every host within {args.limit}x its share of the state (worst {worst:.2f}x)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
