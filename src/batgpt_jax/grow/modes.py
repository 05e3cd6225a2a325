"""The modes of a growth, by name: where new layers go, and what happens to the optimizer."""

DEPTH_MODES = ("interleave", "append", "stack")
OPTIMIZER_MODES = ("carry", "reset")
SCHEDULE_MODES = ("restart", "continue", "rescale")
