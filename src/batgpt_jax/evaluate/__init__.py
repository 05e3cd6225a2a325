"""Evaluation tasks of `batgpt eval` over checkpoints; replies come from the engine (sample/).

  loglikelihood.py     the batched continuation and rolling log-likelihood scorer
  multiple_choice.py   C-Eval and CMMLU layouts, 0- and k-shot, by log-likelihood
  generation.py        prompt sets scored by exact match and contains, chat template or raw
  win_rate.py          one checkpoint's replies against another's, judged in both orders
  instructions.py      the default instruction set's held-out exact match (instruction_eval.py
                       generates the replies)
  lm_eval_adapter.py   the lm-evaluation-harness model class over the scorer and the engine
  results.py           where results go: JSON beside the run, scalars to its TensorBoard
"""
