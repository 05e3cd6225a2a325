"""A reward model <-> Hugging Face's Qwen2- or LlamaForSequenceClassification (num_labels 1).

A reward checkpoint is a decoder plus `reward_head` (model/heads.py): score = h . kernel + bias,
read at each answer's `<eop>`. The Hugging Face class with num_labels = 1 is the same decoder
plus `score.weight` [1, hidden], read at the last token that is not `pad_token_id`. So the export
writes the decoder's tensors without `lm_head` (the class has none; a score never uses it), the
head's kernel as `score.weight`, and config.json with `pad_token_id` set: fed `<l2r> prompt
answer <eop>` (no EOS after it), right- or left-padded with the pad id, HF reads the score where
we do.

The head's `output_bias` has nowhere to go: `score` is a Linear without bias, and no decoder
tensor can add a constant (the final RMSNorm has no bias), so it cannot be folded in exactly.
Refusing a non-zero bias would gain nothing either: the pairwise loss is invariant to a constant
shift, so the bias keeps its initial 0 (up to rounding) and only moves the absolute level of
the scores, never their order or the difference between two answers. So it is kept as a
number: config.json's `batgpt_reward` holds `output_bias` and the `calibration` (the held-out
mean and std saved with the checkpoint, on our raw scale), and

  our raw reward = HF logit + output_bias,  normalised = (raw - calibration.mean) / calibration.std.

Import reads such a directory back (a third-party one with num_labels = 1 too, bias 0) into a
reward run; as the export has no `lm_head`, the imported run's is the embedding, transposed.
The batgpt layout has no sequence-classification class in transformers, so it is refused.
"""

from batgpt_jax.convert import layouts
from batgpt_jax.convert.layout import LayoutError, Tensor
from batgpt_jax.model.config import ModelConfig

HEAD = "reward_head"
CONFIG_KEY = "batgpt_reward"  # the head's output_bias and the calibration, in config.json
ARCHITECTURES = {"qwen2": "Qwen2ForSequenceClassification",
                 "llama": "LlamaForSequenceClassification"}
SCORE = "score.weight"
LM_HEAD = "lm_head.weight"


def is_reward(saved_paths) -> bool:
  """Whether a checkpoint's parameter paths ('a/b/c') hold a reward head."""
  return any(path.startswith(HEAD + "/") for path in saved_paths)


def is_sequence_classification(hf: dict) -> bool:
  return any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or [])


def layout_for(cfg: ModelConfig, name: str | None = None):
  """The layout with a sequence-classification class (named, or the first that fits `cfg`)."""
  if name is not None and name not in ARCHITECTURES:
    raise LayoutError(f"A reward model exports as {' or '.join(ARCHITECTURES.values())}, and "
                      f"the {name!r} layout has no *ForSequenceClassification class in "
                      f"transformers; use --layout={' or --layout='.join(ARCHITECTURES)}.")
  if name is not None:
    return layouts.layout_for(cfg, name)
  reasons = {n: layouts.LAYOUTS[n].problems(cfg) for n in ARCHITECTURES}
  for layout_name, problems in reasons.items():
    if not problems:
      return layouts.LAYOUTS[layout_name]
  raise LayoutError(
      "A reward model exports as Hugging Face's " + " or ".join(ARCHITECTURES.values())
      + ", and this model fits neither:\n"
      + "\n".join(f"  {n}: " + "; ".join(p) for n, p in reasons.items())
      + "\nThe batgpt layout has no sequence-classification class. Train the reward model "
        "from a qwen2- or llama-shaped model (rope_style='half_split', rope_fraction=1.0).")


def tensors(decoder_tensors: list[Tensor]) -> list[Tensor]:
  """The decoder's tensors without lm_head, then the head's kernel [hidden] as score [1, hidden]."""
  return [t for t in decoder_tensors if t.name != LM_HEAD] + [
      Tensor(SCORE, (HEAD + "/kernel",), lambda k: k.reshape(1, -1),
             lambda w: (w.reshape(-1),))]


def hf_config(decoder_config: dict, target, output_bias: float,
              calibration: dict | None) -> dict:
  """The layout's config.json made a one-label sequence classifier that finds the last non-pad."""
  if decoder_config.get("pad_token_id") is None:
    raise LayoutError("The tokenizer has no pad id, so a Hugging Face sequence classifier could "
                      "not find each answer's last token; export with our vocabulary (pad id 0).")
  return {**decoder_config, "architectures": [ARCHITECTURES[target.NAME]],
          "num_labels": 1, "id2label": {"0": "reward"}, "label2id": {"reward": 0},
          CONFIG_KEY: {"output_bias": float(output_bias), "calibration": calibration,
                       "formula": "raw reward = logit + output_bias; normalised = "
                                  "(raw reward - calibration.mean) / calibration.std"}}


def import_checks(hf: dict, layout_name: str) -> float:
  """The output_bias of a sequence-classification config.json; refuses what we cannot read."""
  if layout_name not in ARCHITECTURES:
    raise LayoutError(f"A {layout_name} model has no *ForSequenceClassification class; import "
                      f"a {' or '.join(ARCHITECTURES.values())} directory.")
  labels = hf.get("num_labels") or len(hf.get("id2label") or {}) or 2
  if labels != 1:
    raise LayoutError(f"config.json has {labels} labels; a reward model has one score "
                      "(num_labels = 1).")
  return float((hf.get(CONFIG_KEY) or {}).get("output_bias", 0.0))

