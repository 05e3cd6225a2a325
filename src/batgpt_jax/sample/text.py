"""Text in, text out, over the engine: prompts in both directions, continuations with their spaces.

Prompts start with a direction token, as training documents do (data/preprocessors.py):
  l2r: [<l2r>] + tokens(text); the model continues the text.
  r2l: [<r2l>] + reversed(tokens(text)); the model writes, backwards, what comes BEFORE the text,
       and the output is reversed back. The text is tokenized on its own (with SentencePiece's
       leading '▁'), which may differ slightly from its tokenization inside a longer document.
  unit: what r2l reverses, 'token' or 'word' (a model trained with DataConfig.r2l_unit='word'
       reads its words last to first, each word's tokens in order: data/word_units.py). It must
       be the unit the model was trained with; `batgpt generate` takes it from DataConfig.

SentencePiece drops the space of a text's first piece ('▁market' alone decodes to 'market'), so
a continuation decoded on its own loses the space that joins it to its prompt. `continuation_text`
decodes prompt and continuation together and cuts the prompt's own text away instead.
"""

import dataclasses
from typing import Sequence

from jax.sharding import Mesh

from batgpt_jax.data import chat
from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.data import word_units
from batgpt_jax.model.config import ModelConfig
from batgpt_jax.sample import engine

DIRECTIONS = ("l2r", "r2l")


def _reversed(vocabulary, ids: Sequence[int], unit: str) -> list[int]:
  """`ids` from reading order to R2L order or back, in `unit` (tokens or words)."""
  starts = word_units.word_start_table(vocabulary) if unit == "word" else None
  return word_units.reversed_units(ids, unit, starts)


def prompt_ids(vocabulary, text: str, direction: str, unit: str = "token") -> list[int]:
  """The direction token followed by the text's tokens (reversed in `unit` for r2l)."""
  if direction not in DIRECTIONS:
    raise ValueError(f"direction {direction!r}; expected one of {DIRECTIONS}")
  word_units.check_unit(unit)
  l2r_id, r2l_id = vocab_lib.direction_ids(vocabulary)
  ids = [int(i) for i in vocabulary.encode(text)]
  return [l2r_id] + ids if direction == "l2r" else [r2l_id] + _reversed(vocabulary, ids, unit)


def output_text(vocabulary, ids: Sequence[int], direction: str, unit: str = "token") -> str:
  """Generated ids decoded on their own, in reading order (r2l output is reversed back)."""
  ids = _reversed(vocabulary, ids, unit) if direction == "r2l" else list(ids)
  return vocabulary.decode(ids)


def continuation_text(vocabulary, prompt: Sequence[int], ids: Sequence[int],
                      direction: str, unit: str = "token") -> str:
  """The text of `ids` as it reads next to its prompt: after it (l2r) or before it (r2l).

  prompt: the ids fed to the model (`prompt_ids`: direction token first); ids: the new tokens in
  generation order. l2r 'She went to the' + [▁market] gives ' market'; r2l [▁end, ▁the] before
  '.' gives ' the end' ... with every space where the whole text has it. unit: the r2l unit
  the prompt was reversed in (`prompt_ids`).
  """
  body = [int(i) for i in prompt[1:]]
  ids = [int(i) for i in ids]
  if direction == "r2l":
    body, ids = _reversed(vocabulary, body, unit), _reversed(vocabulary, ids, unit)  # reading
    whole, own = vocabulary.decode(ids + body), vocabulary.decode(body)
    return whole[:len(whole) - len(own)] if whole.endswith(own) else vocabulary.decode(ids)
  whole, own = vocabulary.decode(body + ids), vocabulary.decode(body)
  # Byte-fallback pieces could in principle re-join across the cut; then decode alone.
  return whole[len(own):] if whole.startswith(own) else vocabulary.decode(ids)


def generate_text(cfg: ModelConfig, params, vocabulary, texts: Sequence[str],
                  sampling: engine.SamplingConfig, *, direction: str = "l2r", unit: str = "token",
                  mesh: Mesh | None = None, rules=(), max_batch: int | None = None) -> list[str]:
  """The text after (l2r) or before (r2l) each of `texts`, spaces kept: text + it reads right.

  unit: the r2l unit of the model (DataConfig.r2l_unit it was trained with)."""
  prompts = [prompt_ids(vocabulary, text, direction, unit) for text in texts]
  outputs = engine.generate_ids(cfg, params, prompts, sampling, mesh=mesh, rules=rules,
                                max_batch=max_batch)
  return [continuation_text(vocabulary, prompt, ids, direction, unit)
          for prompt, ids in zip(prompts, outputs)]


def with_chat_stop(vocabulary, sampling: engine.SamplingConfig) -> engine.SamplingConfig:
  """`sampling` that also stops at <eop>, the end of an assistant reply."""
  eop = vocabulary.tokenizer.piece_to_id(chat.END_OF_PROMPT)
  if eop == vocab_lib.UNK_ID or eop in sampling.stop_ids:
    return sampling
  return dataclasses.replace(sampling, stop_ids=tuple(sampling.stop_ids) + (eop,))


def chat_replies(cfg: ModelConfig, params, vocabulary, prompts: Sequence[str],
                 sampling: engine.SamplingConfig, *, mesh: Mesh | None = None, rules=(),
                 max_batch: int | None = None) -> list[str]:
  """The assistant's reply to each rendered chat prompt (`data.chat.chat_prompt`), stripped.

  Batches of up to `max_batch` prompts (all at once when None) through the engine; <eop> and
  EOS end a reply and are not part of it.
  """
  return [reply.strip() for reply in generate_text(
      cfg, params, vocabulary, prompts, with_chat_stop(vocabulary, sampling), mesh=mesh,
      rules=rules, max_batch=max_batch)]
