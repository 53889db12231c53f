"""Training: typed config, the Accelerate loop, checkpoints, cached reference log-probs."""
