"""BatGPT's chat template (as in the released BatGPT-15B-sirius tokenizer's build_inputs).

  [System]\n\n {system}\n\n<eot>                                   (optional, once)
  [Turn n]\n\n[User] {query}\n\n[Assistant] {reply}\n\n<eop>      (each earlier turn)
  [Turn n]\n\n[User] {query}\n\n[Assistant]                        (the turn to answer)
The model's reply ends with <eop>, which is therefore a stop token for chat generation.
"""

from typing import Sequence

END_OF_PROMPT = "<eop>"  # the end of an assistant reply
END_OF_SYSTEM = "<eot>"


def chat_prompt(query: str, history: Sequence[tuple[str, str]] = (),
                system: str | None = None) -> str:
  prompt = f"[System]\n\n {system}\n\n{END_OF_SYSTEM}" if system else ""
  for turn, (old_query, reply) in enumerate(history, start=1):
    prompt += f"[Turn {turn}]\n\n[User] {old_query}\n\n[Assistant] {reply}\n\n{END_OF_PROMPT}"
  return prompt + f"[Turn {len(history) + 1}]\n\n[User] {query}\n\n[Assistant]"
