"""Training a model: settings and presets, auto sizing, the trainer and its update step,
validation and the early stop, the second run, resume state, and the assembly of a run."""
