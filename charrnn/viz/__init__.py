"""Looking inside: the per-position trace of a model over text, the HTML page, and training curves."""
