"""gin plumbing: the package's own gin files, `--gin.X=Y` bindings, and errors that say the fix.

Every command is configured T5X-style: `--gin_file` (repeatable) and `--gin.NAME=VALUE`
bindings. Files are found by the path given, then under the package's `gin/` directory (which
ships inside the wheel: `--gin_file=smoke.gin` or `models/tiny.gin` works from any directory).
`CONFIGURABLE_MODULES` is the registry: importing them declares every configurable, so that a
misspelt name can be told apart from a module that was simply not imported yet.
"""

import argparse
import difflib
import importlib
import inspect
import pathlib
import re
import tokenize

import gin

GIN_DIR = pathlib.Path(__file__).resolve().parent / "gin"

INPUT_ERROR_EXIT = 2  # like argparse: the command line or a file it names is wrong


class InputError(ValueError):
  """Bad input the user can fix (a malformed file, a wrong value): `batgpt` prints it as one
  line naming the file and the fix, and exits with INPUT_ERROR_EXIT (`--debug`: the traceback)."""


def input_error_message(err: BaseException) -> str | None:
  """The one-line message of an InputError, also one raised in a tf.data reader thread (which
  reaches the caller as a TensorFlow error whose text embeds the Python traceback); else None."""
  if isinstance(err, InputError):
    return str(err)
  if type(err).__module__.startswith("tensorflow"):
    found = re.search(r"batgpt_jax\.config\.InputError: (.+)", str(err))
    if found:
      return found.group(1).strip()
  return None

# The modules that declare configurables (imported before any gin file is parsed).
CONFIGURABLE_MODULES = (
    "batgpt_jax.model.config",
    "batgpt_jax.parallel",
    "batgpt_jax.distributed",
    "batgpt_jax.data.pipeline",
    "batgpt_jax.data.tasks",
    "batgpt_jax.data.prepared",
    "batgpt_jax.data.preference_tasks",
    "batgpt_jax.align.label",
    "batgpt_jax.align.ppo",
    "batgpt_jax.evaluate.multiple_choice",
    "batgpt_jax.objectives",
    "batgpt_jax.objectives.ppo",
    "batgpt_jax.train.state",
    "batgpt_jax.train.loop",
)


def add_gin_flags(parser: argparse.ArgumentParser) -> None:
  """Adds --gin_file and documents --gin.NAME=VALUE (which `split_bindings` pulls out)."""
  parser.add_argument("--gin_file", action="append", default=[],
                      help="a gin file (repeatable); names also resolve under the package's gin/")
  parser.add_argument("--gin.NAME=VALUE", dest="_gin_doc", metavar="",
                      help="a gin binding, e.g. --gin.TrainConfig.steps=100 (repeatable)")


def run_later(module: str, function: str):
  """A command's run function that imports `module` only when the command runs, so that the
  command's parser (and its --help) can be built without JAX or TensorFlow."""
  def run(args, gin_text: str) -> int:
    return getattr(importlib.import_module(module), function)(args, gin_text)
  return run


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


def unknown_name(binding_name: str) -> str | None:
  """What is wrong with a binding's `Configurable.param` name, with a 'did you mean'; or None."""
  selector, _, param = binding_name.rpartition(".")
  configurable = selector.split("/")[-1].split(".")[-1]
  if not configurable:  # a macro (`NAME = value`): anything goes
    return None
  registry = _registry()
  if configurable not in registry:
    close = difflib.get_close_matches(configurable, list(registry), n=3)
    takes = [c for c in close if param in inspect.signature(registry[c]).parameters]
    hint = f" Did you mean {' or '.join(f'{c}.{param}' for c in takes or close)}?" if close else ""
    return f"{binding_name}: there is no configurable named {configurable!r}.{hint}"
  parameters = inspect.signature(registry[configurable]).parameters
  if param in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
    return None
  close = difflib.get_close_matches(param, list(parameters), n=3)  # the closest first
  if close:
    return (f"{binding_name}: {configurable} has no parameter {param!r}. Did you mean "
            f"{' or '.join(f'{configurable}.{c}' for c in close)}?")
  return (f"{binding_name}: {configurable} has no parameter {param!r}; it takes: "
          f"{', '.join(parameters)}.")


def _location(err: BaseException, source: str) -> str:
  """'FILE:LINE' of a gin parse error, as well as gin tells it."""
  where = err.args[1] if len(err.args) > 1 else None
  if hasattr(where, "line_num"):  # gin's SyntaxError carries a Location
    return f"{where.filename or source}:{where.line_num}"
  if len(err.args) > 1 and isinstance(err.args[1], tuple):  # tokenize.TokenError: (line, col)
    return f"{source}:{err.args[1][0]}"
  return source


def _parse_problem(err: BaseException, source: str) -> str:
  """One line for a gin parse error: where, what, and the fix."""
  where = _location(err, source)
  first = (str(err.args[0]) if err.args else str(err)).splitlines()[0].rstrip(".")
  if isinstance(err, tokenize.TokenError):
    return (f"{where}: the gin text ends inside an unclosed bracket ({first}). Close every "
            "(, [ and { it opens.")
  if isinstance(err, SyntaxError):
    line = getattr(err.args[1], "line_content", "") if len(err.args) > 1 else ""
    name, _, value = (line or "").partition("=")
    if "malformed node" in first and value.strip():
      return (f"{where}: {name.strip()} = {value.strip()} is not a gin value; a string must be "
              f"quoted: quote it as {name.strip()} = '{value.strip()}' (on the command line: "
              f"--gin.{name.strip()}=\"'{value.strip()}'\").")
    return f"{where}: {first}: {line.strip()}"
  if isinstance(err, IOError):
    first = first.split(". Searched")[0]  # gin lists its search path once per registration
    return (f"{where}: {first}. A gin file (or one it includes) was not found; includes "
            f"resolve by path or under {GIN_DIR}.")
  text = str(err)
  in_file = re.search(r'In file "([^"]+)", line (\d+)', text)
  where = f"{in_file.group(1)}:{in_file.group(2)}" if in_file else where
  binding = text.splitlines()[-1].strip()  # gin's message ends with the binding's line
  hint = unknown_name(binding.split("=")[0].strip()) if "=" in binding else None
  return f"{where}: {hint or first + '.'}"


def _check_value_types() -> None:
  """A string bound where the default is a number (`steps = 'abc'`) fails here, named, instead of
  as a TypeError deep inside training."""
  registry = _registry()
  problems = []
  # pylint: disable-next=protected-access
  for (_, selector), values in gin.config._CONFIG.items():
    name = selector.split(".")[-1]
    if name not in registry:
      continue
    parameters = inspect.signature(registry[name]).parameters
    for param, value in values.items():
      default = parameters[param].default if param in parameters else None
      if isinstance(value, str) and isinstance(default, (int, float)):
        kind = {bool: "a bool", int: "an int", float: "a float"}[type(default)]
        problems.append(f"{name}.{param} = {value!r} is a string, but it takes {kind} "
                        f"(default {default!r}): write the value "
                        f"unquoted, e.g. --gin.{name}.{param}={default!r}.")
  if problems:
    raise InputError("bad gin value: " + "\n  ".join(problems))


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
  raise InputError(f"gin file {name!r} not found, neither as a path nor under {GIN_DIR}.{hint}")


def parse_gin(files: list[str], bindings: list[str]) -> str:
  """Parses gin files and bindings; bad input becomes an `InputError` naming it. Returns the text.

  Every --gin binding's name is checked before parsing, so that several misspellings are all
  reported at once (gin itself stops at the first).
  """
  paths = [resolve_gin_file(name) for name in files]  # before the slow imports: fail fast
  register_configurables()
  if str(GIN_DIR) not in gin.config._LOCATION_PREFIXES:  # pylint: disable=protected-access
    gin.add_config_file_search_path(str(GIN_DIR))
  unknown = [problem for problem in (unknown_name(b.split("=")[0].strip()) for b in bindings)
             if problem]
  if unknown:
    raise InputError("bad gin binding: " + "\n  ".join(unknown))
  steps = [(path, lambda path=path: gin.parse_config_file(path)) for path in paths]
  steps.append(("the --gin bindings", lambda: gin.parse_config(bindings)))
  for source, parse in steps:
    try:
      parse()
    except (ValueError, KeyError, IOError, SyntaxError, tokenize.TokenError) as err:
      raise InputError(f"bad gin configuration: {_parse_problem(err, source)}") from None
  _check_value_types()
  return gin.config_str()


def model_size(name: str):
  """The ModelConfig of `gin/models/<name>.gin` alone; gin's bindings are cleared before and
  after."""
  from batgpt_jax.model.config import ModelConfig  # pylint: disable=import-outside-toplevel
  gin.clear_config()
  try:
    parse_gin([f"models/{name}.gin"], [])
    return ModelConfig()
  finally:
    gin.clear_config()


def run_configs() -> dict:
  """The run's configs from the current gin bindings, as the keyword arguments of `loop.train`
  (cfg, model_cfg, data_cfg, mesh_cfg, opt_cfg); an invalid value is a one-line error."""
  # pylint: disable=import-outside-toplevel
  from batgpt_jax import parallel
  from batgpt_jax.data import pipeline
  from batgpt_jax.model.config import ModelConfig
  from batgpt_jax.train import loop, state
  try:
    return dict(cfg=loop.TrainConfig(), model_cfg=ModelConfig(), data_cfg=pipeline.DataConfig(),
                mesh_cfg=parallel.MeshConfig(), opt_cfg=state.OptimizerConfig())
  except ValueError as err:  # the configs validate themselves; say which setting to change
    raise InputError(str(err).splitlines()[0]) from None
