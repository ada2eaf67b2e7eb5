"""The pipeline between the foundation model and training: pseudo-labels (AMG), their store, the uncertainty maps."""
