"""From text files to token ids: reading a corpus, vocabularies, preparing and caching the
encoded text, and cutting it into truncated-BPTT batches."""
