"""Text from a model: the options, choosing each token (temperature, top-k, top-p), generating
rows, and beam search."""
