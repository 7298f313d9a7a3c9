"""Fine-tuning onto characters the checkpoint has never seen: a grown character vocabulary.

``train --init-from`` encodes the new corpus with the checkpoint's vocabulary. A character
vocabulary that lacks some of the corpus's characters gets them appended after its own, so
every old character keeps its id and its embedding and output rows; the model gains one new
embedding row and one new output row per character. A subword vocabulary needs no growing:
byte fallback already spells any character (SentencePiece's own space mark aside).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from charrnn.data.vocab import Vocab, added_chars, describe_chars

# Tokens of the training text the log-normaliser of the old outputs is averaged over.
PRIOR_TOKENS = 2048


def extend_checkpoint(
    ckpt: dict[str, Any], vocab: Vocab, train_ids: np.ndarray, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """A copy of ``ckpt`` whose model reads and writes ``vocab``, the checkpoint's vocabulary with
    characters appended; ``ckpt`` itself when nothing was appended.

    New embedding rows sit at the mean of the old ones (an average character, not noise that
    would jolt the state). New output rows have zero weights and a bias that gives each new
    character its frequency in ``train_ids``: the log frequency plus the old outputs' mean
    log-normaliser, so its probability starts near that frequency whatever the scale the old
    biases were trained to. The old outputs' logits are untouched, so the old characters keep
    exactly their relative probabilities until training moves them.
    """
    added = added_chars(ckpt["vocab"], vocab)
    if not added:
        return ckpt
    import torch

    from charrnn.model.network import CharRNN, ModelConfig

    old_size = len(ckpt["vocab"]["chars"])
    cfg = ModelConfig.from_dict({**ckpt["model_config"], "vocab_size": vocab.size})
    state = dict(ckpt["state_dict"])
    emb = state["embed.weight"]
    state["embed.weight"] = torch.cat([emb, emb.mean(0, keepdim=True).expand(len(added), -1)])
    head = state["head.weight"]
    if cfg.tie:
        state["head.weight"] = state["embed.weight"]
    else:
        state["head.weight"] = torch.cat([head, head.new_zeros(len(added), head.shape[1])])
    counts = np.zeros(vocab.size, np.float64)
    for a in range(0, len(train_ids), 1 << 24):  # in slices: the memory-mapped text may be gigabytes
        counts += np.bincount(train_ids[a : a + (1 << 24)], minlength=vocab.size)
    counts = counts[old_size:]
    log_freq = np.log((counts + 0.1) / (max(1, len(train_ids)) + 0.1 * vocab.size))
    state["head.bias"] = torch.cat([state["head.bias"], state["head.bias"].new_zeros(len(added))])
    model = CharRNN(cfg).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(train_ids[:PRIOR_TOKENS], dtype=np.int64))[None]
        logits, _ = model(x)
        normaliser = float(logits[0, :, :old_size].float().logsumexp(-1).mean()) if x.shape[1] else 0.0
        model.head.bias[old_size:] = torch.from_numpy(log_freq).float() + normaliser
    if log is not None:
        log(
            f"note: the corpus has {len(added)} character(s) the checkpoint lacks; added them to the vocabulary "
            f"(ids {old_size}-{vocab.size - 1}): {describe_chars(list(added))}"
        )
    return {
        **ckpt,
        "model_config": cfg.to_dict(),
        "vocab": vocab.to_state(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
