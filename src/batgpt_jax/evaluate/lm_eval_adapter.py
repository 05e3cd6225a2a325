"""An lm-evaluation-harness model over BatGPT checkpoints: any harness task runs on our runs.

    lm_eval --model batgpt --model_args checkpoint=runs/sft,vocab=sp.model --tasks ... \\
        --include_path DIR   # with `import batgpt_jax.evaluate.lm_eval_adapter` done first

or, in Python, `lm_eval.simple_evaluate(model=BatGPTLM(checkpoint=...), tasks=[...])`. The class
is registered as `batgpt` when this module is imported (install the `eval` extra for lm-eval).

All three request types go through this project's own code, so a harness number means what ours
do: `loglikelihood` and `loglikelihood_rolling` through `evaluate/loglikelihood.py` (contexts
start with <l2r>; rolling windows of the model's max_len), `generate_until` through the engine
(`sample/engine.py`, greedy unless the task asks for a temperature), the text cut before the
first `until` string. A prompt too long for max_len minus the tokens to generate keeps its end.
"""

from typing import Sequence

from lm_eval.api import model as lm_model
from lm_eval.api import registry

from batgpt_jax.data import vocab as vocab_lib
from batgpt_jax.evaluate import loglikelihood
from batgpt_jax.sample import engine, options, text

DEFAULT_MAX_GEN_TOKS = 256


@registry.register_model("batgpt")
class BatGPTLM(lm_model.LM):
  """lm_eval's model interface over a checkpoint read by `sample/options.load`."""

  def __init__(self, checkpoint: str | None = None, step: int | str | None = None,
               vocab: str | None = None, batch_size: int | str | None = 16,
               max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS, loaded=None, **unused):
    """checkpoint: a run, checkpoints or step directory, on the gin-configured mesh (none when
    no axis rules are configured); `loaded` instead: an `options.Loaded` already in memory.
    lm_eval passes its own settings (device, max_batch_size) too; the mesh decides placement."""
    super().__init__()
    del unused
    if loaded is None:
      if not checkpoint:
        raise ValueError("BatGPTLM needs checkpoint=RUN_DIR (or loaded=an options.Loaded); "
                         "e.g. --model_args checkpoint=runs/sft")
      mesh, rules = options.mesh_and_rules()
      loaded = options.load(checkpoint, None if step in (None, "") else int(step),
                            vocab_path=vocab or None, mesh=mesh, rules=rules)
    self.loaded = loaded
    self.batch_size = 16 if batch_size in (None, "", "auto") else int(batch_size)
    self.max_gen_toks = int(max_gen_toks)

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    pairs = [loglikelihood.text_request(self.loaded.vocabulary, *request.args[:2])
             for request in requests]
    scores = loglikelihood.score(self.loaded, pairs, batch_size=self.batch_size)
    out = [(s.logprob, s.greedy) for s in scores]
    for request, result in zip(requests, out):
      self.cache_hook.add_partial("loglikelihood", request.args, result)
    return out

  def loglikelihood_rolling(self, requests) -> list[float]:
    texts = [request.args[0] for request in requests]
    out = loglikelihood.rolling_loglikelihood(self.loaded, texts, batch_size=self.batch_size)
    for request, result in zip(requests, out):
      self.cache_hook.add_partial("loglikelihood_rolling", request.args, result)
    return out

  def generate_until(self, requests) -> list[str]:
    out: list[str | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}  # one engine call per distinct sampling setting
    for i, request in enumerate(requests):
      kwargs = dict(request.args[1]) if len(request.args) > 1 and request.args[1] else {}
      until = kwargs.pop("until", [])
      until = (until,) if isinstance(until, str) else tuple(until)
      new_tokens = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
      temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", True) else 0.0
      groups.setdefault((until, new_tokens, temperature), []).append(i)
    for (until, new_tokens, temperature), rows in groups.items():
      contexts = [requests[i].args[0] for i in rows]
      for i, reply in zip(rows, self.generate(contexts, until, new_tokens, temperature)):
        out[i] = reply
        self.cache_hook.add_partial("generate_until", requests[i].args, reply)
    return out

  def generate(self, contexts: Sequence[str], until: Sequence[str], max_new_tokens: int,
               temperature: float = 0.0) -> list[str]:
    """The text after each context, up to EOS, max_new_tokens or before the first `until`."""
    cfg, vocabulary = self.loaded.cfg, self.loaded.vocabulary
    max_new_tokens = min(max_new_tokens, cfg.max_len - 1)
    keep = cfg.max_len - max_new_tokens  # prompt positions, direction token included
    prompts = []
    for context in contexts:
      ids = text.prompt_ids(vocabulary, context, "l2r")
      prompts.append(ids[:1] + ids[len(ids) - keep + 1:] if len(ids) > keep else ids)
    sampling = engine.SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                     stop_ids=(vocab_lib.EOS_ID,))
    generated = engine.generate_ids(cfg, self.loaded.params, prompts, sampling,
                                    mesh=self.loaded.mesh, rules=self.loaded.rules,
                                    max_batch=self.batch_size)
    return [cut_at_stops(text.continuation_text(vocabulary, prompt, ids, "l2r"), until)
            for prompt, ids in zip(prompts, generated)]


def cut_at_stops(reply: str, until: Sequence[str]) -> str:
  """`reply` up to (not including) the earliest of the `until` strings."""
  ends = [reply.find(stop) for stop in until if stop and stop in reply]
  return reply[:min(ends)] if ends else reply
