"""The network and what is saved of it: cells, the model, checkpoints, and the one-token
recurrence generation steps through (with its one-row fast path)."""
