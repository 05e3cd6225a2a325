"""Training: state and optimizer, the pure step, checkpoints, metrics and the loop."""
