"""`batgpt generate` prints each prompt joined to its continuation as the whole text decodes."""

import argparse

import pytest

from batgpt_jax.sample import commands, engine, text


@pytest.fixture
def run(tiny_run, data_tiny_vocab_path, capsys):
  """run(*flags) -> stdout of `batgpt generate` on the tiny run (10 new tokens)."""
  parser = argparse.ArgumentParser(prog="batgpt")
  commands.add_generate_command(parser.add_subparsers(dest="command", required=True))

  def run_generate(*flags):
    args = parser.parse_args(["generate", f"--checkpoint={tiny_run}",
                              f"--vocab={data_tiny_vocab_path}", "--max_new_tokens=10", *flags])
    assert args.run(args, "") == 0
    return capsys.readouterr().out
  return run_generate


def test_generate_prints_the_whole_text_with_its_spaces(run, batgpt_model, data_tiny_vocab):
  cfg, params = batgpt_model
  prompts = ["The baker sells bread to", "The cat", "A dog"]
  out = run(*(f"--prompt={p}" for p in prompts))
  ids = [text.prompt_ids(data_tiny_vocab, p, "l2r") for p in prompts]
  new = engine.generate_ids(cfg, params, ids, engine.SamplingConfig(max_new_tokens=10))
  for i, (prompt, new_ids) in enumerate(zip(ids, new)):
    whole = data_tiny_vocab.decode(prompt[1:] + new_ids)  # decoded at once: every space in place
    assert f"--- [{i}] ---\n{whole}\n" in out
  assert whole.startswith("A dog")


def test_generate_r2l_writes_what_comes_before(run, batgpt_model, data_tiny_vocab):
  cfg, params = batgpt_model
  texts = ["the end.", "a bird.", "今天天气"]  # three prompts: the batch shape other tests use
  out = run(*(f"--prompt={t}" for t in texts), "--direction=r2l")
  prompts = [text.prompt_ids(data_tiny_vocab, t, "r2l") for t in texts]
  new = engine.generate_ids(cfg, params, prompts, engine.SamplingConfig(max_new_tokens=10))
  wholes = [data_tiny_vocab.decode(n[::-1] + p[1:][::-1]) for p, n in zip(prompts, new)]
  assert out == "".join(f"--- [{i}] ---\n{w}\n" for i, w in enumerate(wholes))
  assert all(w.endswith(t) for w, t in zip(wholes, texts))


def test_generate_sampling_chat_and_bad_flags(run):
  out = run("--prompt=The cat", "--prompt=A dog", "--prompt=The", "--temperature=0.7",
            "--top_k=50", "--top_p=0.9", "--seed=3", "--stop=<eop>")
  assert "--- [0] ---\nThe cat" in out and "--- [1] ---\nA dog" in out
  assert run("--prompt=Hi", "--chat", "--system=Be brief.").startswith("--- [0] ---\n")
  with pytest.raises(SystemExit, match="not a single piece"):
    run("--prompt=x", "--stop=nonsense piece")
  with pytest.raises(SystemExit, match="drop --direction=r2l"):
    run("--prompt=x", "--chat", "--direction=r2l")
