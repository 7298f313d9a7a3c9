"""Token ids in the shapes the model reads: training windows over parallel streams (truncated
BPTT), and a text cut into rows that score every prediction exactly once (validation, eval).
"""

from __future__ import annotations

import numpy as np

from charrnn.errors import CharrnnError


class Batches:
    """The training ids cut into ``batch_size`` parallel streams, read ``seq_len`` at a time.

    Window k of an epoch is columns ``[k*seq_len, (k+1)*seq_len)`` of every stream, so window
    k+1 continues exactly where window k stopped in each row: the hidden state carried from
    one window to the next is the state of the text that really came before.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int) -> None:
        per_stream = (len(ids) - 1) // batch_size
        if per_stream < seq_len:
            raise CharrnnError(
                f"training text too short: {len(ids)} tokens for {batch_size} streams of "
                f"{seq_len} (+1); use a smaller --batch-size or --seq-len"
            )
        used = batch_size * per_stream
        self.inputs = ids[:used].reshape(batch_size, per_stream)
        self.targets = ids[1 : used + 1].reshape(batch_size, per_stream)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.windows = per_stream // seq_len

    @staticmethod
    def fit_batch_size(n_tokens: int, batch_size: int, seq_len: int) -> int:
        """The largest batch size up to ``batch_size`` that leaves at least one full window."""
        if n_tokens - 1 < seq_len:
            raise CharrnnError(
                f"training text too short: {n_tokens} tokens, one training window needs "
                f"{seq_len + 1}; give more text or a smaller --seq-len"
            )
        return max(1, min(batch_size, (n_tokens - 1) // seq_len))

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = k * self.seq_len, (k + 1) * self.seq_len
        return self.inputs[:, a:b], self.targets[:, a:b]


def val_streams(
    ids: np.ndarray, streams: int, burn_in: int = 0
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """Split every prediction of a text over ``streams`` rows plus a tail, each row read from
    ``burn_in`` tokens before the part it scores.

    Returns (inputs, targets) of shape (streams, burn_in + L), the number of leading columns that
    rows after the first only read to build up their state (the first row scores all of its
    columns: no text comes before it), and the leftover (tail_inputs, tail_targets) that continue
    the last row; together the scored positions cover all ``len(ids) - 1`` predictions once.
    """
    n = len(ids) - 1
    if n < 1:  # nothing to predict
        empty = np.zeros((1, 0), dtype=ids.dtype)
        return empty, empty, 0, ids[:0], ids[:0]
    streams = max(1, min(streams, n))
    burn_in = burn_in if streams > 1 else 0
    per = (n - burn_in) // streams
    if per < 1:  # too short for these rows and their burn-in (or burn_in >= n): one row
        streams, burn_in, per = 1, 0, n
    width = burn_in + per
    used = burn_in + streams * per

    def rows(a: np.ndarray) -> np.ndarray:
        # Views, not copies: the rows overlap by burn_in, and ``charrnn eval`` may score gigabytes.
        return np.lib.stride_tricks.sliding_window_view(a, width)[::per]

    return rows(ids[:used]), rows(ids[1 : used + 1]), burn_in, ids[used:n], ids[used + 1 : n + 1]
