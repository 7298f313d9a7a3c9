"""Beam search: the most likely continuation rather than a sample."""

from __future__ import annotations

import torch

from charrnn.data.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.model.network import CharRNN, join_states, map_state, select_state
from charrnn.model.stepper import Stepper
from charrnn.sampling.generate import start_ids, warm_up


@torch.no_grad()
def beam_search(model: CharRNN, vocab: Vocab, prime_ids: list[int], width: int, length: int) -> tuple[str, float]:
    """The most likely continuation of ``length`` tokens found with ``width`` beams (for a
    subword vocabulary the text is then cut to ``length`` characters).

    The greedy path runs alongside as one extra row that is never pruned, so the result is
    never less likely than greedy decoding (plain beam search can, rarely, lose it).
    Returns the text and its log-probability in nats.
    """
    if width < 1:
        raise CharrnnError(f"--beam-width must be >= 1 (got {width})")
    model.eval()
    stepper = Stepper(model)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), 1)
    logp = logits.log_softmax(-1)
    V = logp.shape[-1]
    scores = torch.zeros(1, dtype=torch.float64)
    seqs = torch.zeros(1, 0, dtype=torch.long)
    greedy_score = torch.zeros((), dtype=torch.float64)
    greedy_seq: list[int] = []
    greedy_logp, greedy_state = logp[0], state
    for _ in range(length):
        g = int(greedy_logp.argmax())
        greedy_score += float(greedy_logp[g])
        greedy_seq.append(g)
        total = (scores[:, None] + logp.double()).flatten()
        k = min(width, total.numel())
        top = torch.topk(total, k)
        rows, toks = top.indices // V, top.indices % V
        scores = top.values
        seqs = torch.cat([seqs[rows], toks[:, None]], 1)
        state = select_state(state, rows)
        # One step for the beams and the greedy row together.
        both = torch.cat([toks, torch.tensor([g])])
        out, joint = stepper.step(both, join_states([state, greedy_state]))
        out = out.log_softmax(-1)
        logp, greedy_logp = out[:-1], out[-1]
        state, greedy_state = map_state(lambda s: s[:, :-1], joint), map_state(lambda s: s[:, -1:], joint)
    best = int(scores.argmax())
    if float(greedy_score) > float(scores[best]):
        return vocab.decode(greedy_seq)[:length], float(greedy_score)
    return vocab.decode(seqs[best].tolist())[:length], float(scores[best])
