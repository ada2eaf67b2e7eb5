"""The trainer: typed batches, the interactive step, the loop (checkpoints, resume, logs)."""
