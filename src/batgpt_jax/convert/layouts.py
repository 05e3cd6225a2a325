"""The Hugging Face layouts we convert to and from, and the one that fits a model config."""

from batgpt_jax.convert import batgpt, llama, qwen2
from batgpt_jax.convert.layout import LayoutError, refuse
from batgpt_jax.model.config import ModelConfig

# In the order `layout_for` tries them when none is named.
LAYOUTS = {module.NAME: module for module in (qwen2, llama, batgpt)}


def layout_for(cfg: ModelConfig, name: str | None = None):
  """The layout module named `name`, or the first that fits `cfg` exactly; else LayoutError."""
  if name is not None:
    if name not in LAYOUTS:
      raise LayoutError(f"Unknown layout {name!r}; expected one of {sorted(LAYOUTS)}.")
    refuse(name, LAYOUTS[name].problems(cfg))
    return LAYOUTS[name]
  reasons = {}
  for layout_name, module in LAYOUTS.items():
    problems = module.problems(cfg)
    if not problems:
      return module
    reasons[layout_name] = problems
  raise LayoutError("No Hugging Face layout fits this model exactly:\n" + "\n".join(
      f"  {layout_name}: " + "; ".join(problems) for layout_name, problems in reasons.items()))
