"""Multi-process start-up: `jax.distributed.initialize` from flags, environment or gin, or detected.

Where the coordinator comes from, first match wins:
  1. flags `--coordinator_address --num_processes --process_id` (all three, or none);
  2. environment `BATGPT_COORDINATOR_ADDRESS`, `BATGPT_NUM_PROCESSES`, `BATGPT_PROCESS_ID`
     (what `launch/local_multihost.sh` sets);
  3. gin `DistributedConfig.coordinator_address / num_processes / process_id`;
  4. detection (`DistributedConfig.mode = 'auto'`): under `srun` with more than one task, on a
     Cloud TPU VM, or in a GKE TPU pod, JAX finds the coordinator itself.
With none of these the run is a single process and nothing is initialised.

The timeouts are what catch a hung or lost host: `initialization_timeout` bounds how long the
processes wait for each other at start-up, `heartbeat_timeout` how long a silent host is tolerated
before every other process fails (instead of waiting forever in a collective), and
`shutdown_timeout` how long the exit barrier waits.
"""

import dataclasses
import glob
import logging
import os
from typing import Mapping

import gin

ENV_ADDRESS = "BATGPT_COORDINATOR_ADDRESS"
ENV_COUNT = "BATGPT_NUM_PROCESSES"
ENV_ID = "BATGPT_PROCESS_ID"
MODES = ("auto", "on", "off")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins the others: explicit coordinator, detection, or single process."""

  mode: str = "auto"  # 'auto': detect a launcher; 'on': always initialise (detect); 'off': never
  coordinator_address: str | None = None  # host:port of process 0
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout: int = 300  # seconds for every process to join
  heartbeat_timeout: int = 100  # seconds of silence before a host is declared dead
  shutdown_timeout: int = 300  # seconds the exit barrier waits for the others

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"DistributedConfig.mode={self.mode!r}; expected one of {MODES}.")


@dataclasses.dataclass(frozen=True)
class Coordinator:
  address: str
  num_processes: int
  process_id: int


def _coordinator(address, count, index, origin: str) -> Coordinator | None:
  given = {"coordinator address": address, "process count": count, "process id": index}
  if all(v in (None, "") for v in given.values()):
    return None
  missing = [name for name, v in given.items() if v in (None, "")]
  if missing:
    raise ValueError(f"Incomplete multi-process settings from {origin}: {', '.join(missing)} "
                     "missing. Give the coordinator address (host:port of process 0), the "
                     "process count and this process's id together, or none of them.")
  try:
    count, index = int(count), int(index)
  except ValueError:
    raise ValueError(f"The process count and id from {origin} must be integers; got "
                     f"{count!r} and {index!r}.") from None
  if ":" not in str(address):
    raise ValueError(f"Coordinator address {address!r} from {origin} needs a port: host:port, "
                     "e.g. 10.0.0.2:8476.")
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"Process id {index} from {origin} is outside [0, {count}); ids run from 0 "
                     "to the process count - 1.")
  return Coordinator(str(address), count, index)


def explicit_coordinator(cfg: DistributedConfig, flags: Mapping | None = None,
                         environ: Mapping[str, str] | None = None) -> Coordinator | None:
  """The coordinator named by flags, else the environment, else gin; None when none names one."""
  flags = flags or {}
  environ = os.environ if environ is None else environ
  return (_coordinator(flags.get("coordinator_address"), flags.get("num_processes"),
                       flags.get("process_id"), "the command-line flags")
          or _coordinator(environ.get(ENV_ADDRESS), environ.get(ENV_COUNT), environ.get(ENV_ID),
                          f"the environment ({ENV_ADDRESS}, {ENV_COUNT}, {ENV_ID})")
          or _coordinator(cfg.coordinator_address, cfg.num_processes, cfg.process_id,
                          "gin (DistributedConfig)"))


GOOGLE_PCI_VENDOR = "0x1ae0"  # TPU chips are PCI devices of this vendor


def _has_tpu_chips() -> bool:
  for path in glob.glob("/sys/bus/pci/devices/*/vendor"):
    try:
      with open(path, encoding="ascii") as f:
        if f.read().strip() == GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def detected_launcher(environ: Mapping[str, str] | None = None,
                      tpu_chips: bool | None = None) -> str | None:
  """The multi-host environment JAX can initialise itself in, or None."""
  environ = os.environ if environ is None else environ
  if "SLURM_STEP_ID" in environ and int(environ.get("SLURM_STEP_NUM_TASKS",
                                                    environ.get("SLURM_NTASKS", "1"))) > 1:
    return "SLURM (srun)"
  if environ.get("TPU_WORKER_HOSTNAMES") or environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "TPU pod (TPU_WORKER_HOSTNAMES)"
  if environ.get("JAX_PLATFORMS", "").strip() in ("cpu", "cuda", "gpu"):
    return None
  if _has_tpu_chips() if tpu_chips is None else tpu_chips:
    return "Cloud TPU VM"
  return None


def initialize(cfg: DistributedConfig, flags: Mapping | None = None) -> None:
  """Joins the other processes of this job, when there are any. Call before touching devices."""
  import jax  # pylint: disable=import-outside-toplevel  (so that `batgpt train --help` is light)
  timeouts = dict(initialization_timeout=cfg.initialization_timeout,
                  heartbeat_timeout_seconds=cfg.heartbeat_timeout,
                  shutdown_timeout_seconds=cfg.shutdown_timeout)
  coordinator = None if cfg.mode == "off" else explicit_coordinator(cfg, flags)
  if coordinator is not None:
    logging.info("Joining %d processes as process %d (coordinator %s)",
                 coordinator.num_processes, coordinator.process_id, coordinator.address)
    jax.distributed.initialize(coordinator.address, coordinator.num_processes,
                               coordinator.process_id, **timeouts)
  elif cfg.mode == "on" or (cfg.mode == "auto" and detected_launcher()):
    logging.info("Initialising JAX distributed (%s)", detected_launcher() or "detection")
    try:
      jax.distributed.initialize(**timeouts)
    except (ValueError, RuntimeError) as err:
      raise RuntimeError(
          f"jax.distributed.initialize could not find the other processes ({err}). Pass "
          "--coordinator_address, --num_processes and --process_id, or set "
          "DistributedConfig.mode = 'off' for a single-process run.") from err
  else:
    return
  logging.info("Process %d of %d: %d local of %d devices", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())


def add_flags(parser) -> None:
  group = parser.add_argument_group("multi-process (also BATGPT_* environment or gin)")
  group.add_argument("--coordinator_address", help="host:port of process 0")
  group.add_argument("--num_processes", type=int, help="processes in the job")
  group.add_argument("--process_id", type=int, help="this process, 0 .. num_processes-1")


def flags_of(args) -> dict:
  return {name: getattr(args, name, None)
          for name in ("coordinator_address", "num_processes", "process_id")}
