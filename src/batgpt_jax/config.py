"""gin plumbing: the package's own gin files, `--gin.X=Y` bindings, and errors that say the fix.

Every command is configured T5X-style: `--gin_file` (repeatable) and `--gin.NAME=VALUE`
bindings. Files are found by the path given, then under the package's `gin/` directory (which
ships inside the wheel: `--gin_file=smoke.gin` or `models/tiny.gin` works from any directory).
`CONFIGURABLE_MODULES` is the registry: importing them declares every configurable, so that a
misspelt name can be told apart from a module that was simply not imported yet.
"""

import argparse
import dataclasses
import difflib
import importlib
import inspect
import pathlib

import gin

GIN_DIR = pathlib.Path(__file__).resolve().parent / "gin"

# The modules that declare configurables (imported before any gin file is parsed).
CONFIGURABLE_MODULES = (
    "batgpt_jax.model.config",
    "batgpt_jax.parallel",
    "batgpt_jax.distributed",
    "batgpt_jax.data.pipeline",
    "batgpt_jax.data.tasks",
    "batgpt_jax.objectives",
    "batgpt_jax.train.state",
    "batgpt_jax.train.loop",
)


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  """Adds --gin_file and documents --gin.NAME=VALUE (which `split_bindings` pulls out)."""
  parser.add_argument("--gin_file", action="append", default=[],
                      help="a gin file (repeatable); names also resolve under the package's gin/")
  parser.add_argument("--gin.NAME=VALUE", dest="_gin_doc", metavar="",
                      help="a gin binding, e.g. --gin.TrainConfig.steps=100 (repeatable)")


def split_bindings(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls the `--gin.X=Y` flags out of argv as gin bindings `X = Y`."""
  rest, bindings = [], []
  for arg in argv:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      bindings.append(f"{name} = {value}")
    else:
      rest.append(arg)
  return rest, bindings


def register_configurables() -> None:
  from batgpt_jax import logs  # pylint: disable=import-outside-toplevel
  with logs.native_noise_filtered():  # importing TensorFlow and JAX prints C++ start-up lines
    for module in CONFIGURABLE_MODULES:
      importlib.import_module(module)


def _registry() -> dict:
  return {selector.split(".")[-1]: item.wrapped
          for selector, item in gin.config._REGISTRY.items()}  # pylint: disable=protected-access


def suggest(binding_name: str) -> str:
  """A 'did you mean' for a misspelt configurable or parameter name."""
  configurable, _, param = binding_name.split("/")[-1].rpartition(".")
  registry = _registry()
  if configurable not in registry:
    close = difflib.get_close_matches(configurable, list(registry), n=3)
    return f" Did you mean {' or '.join(close)}?" if close else ""
  fields = list(inspect.signature(registry[configurable]).parameters)
  close = difflib.get_close_matches(param, fields, n=3)
  hint = f" Did you mean {configurable}.{close[0]}?" if close else ""
  return f"{hint} {configurable} takes: {', '.join(fields)}."


def resolve_gin_file(name: str) -> str:
  """The path of a gin file given as a path, or by its name under the package's gin/."""
  path = pathlib.Path(name)
  if path.exists():
    return str(path)
  packaged = GIN_DIR / name
  if packaged.exists():
    return str(packaged)
  close = difflib.get_close_matches(name, [str(p.relative_to(GIN_DIR))
                                           for p in GIN_DIR.rglob("*.gin")], n=3)
  hint = f" Did you mean {' or '.join(close)}?" if close else ""
  raise SystemExit(f"error: gin file {name!r} not found, neither as a path nor under "
                   f"{GIN_DIR}.{hint}")


def parse_gin(files: list[str], bindings: list[str]) -> str:
  """Parses gin files and bindings; unknown names become a clear error. Returns the gin text."""
  register_configurables()
  gin.add_config_file_search_path(str(GIN_DIR))
  paths = [resolve_gin_file(name) for name in files]
  try:
    gin.parse_config_files_and_bindings(paths, bindings, finalize_config=False)
  except (ValueError, KeyError, IOError) as err:
    message = str(err).splitlines()[0].rstrip(".")
    hint = "".join(suggest(b.split("=")[0].strip()) for b in bindings
                   if b.split("=")[0].strip().rpartition(".")[0].split("/")[-1] in message)
    raise SystemExit(f"error: bad gin configuration: {message}.{hint}\n"
                     "Check the spelling of the binding against the configurables "
                     "(e.g. TrainConfig, ModelConfig, DataConfig, MeshConfig, OptimizerConfig) "
                     f"and the files under {GIN_DIR}.") from None
  return gin.config_str()


@dataclasses.dataclass(frozen=True)
class RunConfigs:
  """The configs of one run, each built from the parsed gin bindings."""

  cfg: object  # train.loop.TrainConfig
  model_cfg: object  # model.config.ModelConfig
  data_cfg: object  # data.pipeline.DataConfig
  mesh_cfg: object  # parallel.MeshConfig
  opt_cfg: object  # train.state.OptimizerConfig

  def as_kwargs(self) -> dict:
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def run_configs() -> RunConfigs:
  """The run's configs from the current gin bindings; an invalid value is a one-line error."""
  # pylint: disable=import-outside-toplevel
  from batgpt_jax import parallel
  from batgpt_jax.data import pipeline
  from batgpt_jax.model.config import ModelConfig
  from batgpt_jax.train import loop, state
  try:
    return RunConfigs(cfg=loop.TrainConfig(), model_cfg=ModelConfig(),
                      data_cfg=pipeline.DataConfig(), mesh_cfg=parallel.MeshConfig(),
                      opt_cfg=state.OptimizerConfig())
  except ValueError as err:  # the configs validate themselves; say which setting to change
    raise SystemExit(f"error: {str(err).splitlines()[0]}") from None
