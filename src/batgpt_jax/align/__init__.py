"""Alignment commands over the shared core: `batgpt reward score` (reward_score.py) and the
RLAIF labeller `batgpt label` (label.py)."""
