"""What the model does on a text, position by position: surprisal, predictions, every unit's state.

The text is read one token at a time through the sampler's ``Stepper`` (the model's own
recurrence), starting, as sampling does, from the state after a newline, so even the first
character has a prediction. After each token we keep the bits the model paid for it, its five
most likely next tokens, and the hidden output ``h`` (and, for the LSTM family, cell state
``c``) of every unit of every layer.

To find the interesting units instead of guessing, each unit's activation is correlated
(Pearson) with simple features of the text computed from the characters alone: inside
quotes, inside parentheses, position in the line, inside a speaker cue. Karpathy's "quote
cell" and "line length cell" are the units at the top of those rankings.
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from charrnn.data.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.model.network import LSTM_FAMILY, CharRNN, state_tensors
from charrnn.model.stepper import Stepper
from charrnn.sampling.generate import start_ids

TOP_PREDICTIONS = 5
OPEN_QUOTES, CLOSE_QUOTES = "\u201c", "\u201d"


@dataclass(frozen=True)
class Unit:
    """One recurrent unit: ``layer`` and ``index`` from 0, ``state`` 'c' (cell) or 'h' (output)."""

    layer: int
    index: int
    state: str

    @property
    def name(self) -> str:
        return f"{self.layer}:{self.index}:{self.state}"


@dataclass
class Trace:
    """Per segment (a character, or a subword piece that ends on a character boundary):
    its text, the bits the model paid for it, the top next-token predictions after it, and
    the states ``states[kind]`` of shape (segments, layers, hidden)."""

    segments: list[str]
    bits: np.ndarray
    predictions: list[list[tuple[str, float]]]
    states: dict[str, np.ndarray]

    @property
    def text(self) -> str:
        return "".join(self.segments)

    def activation(self, unit: Unit) -> np.ndarray:
        return self.states[unit.state][:, unit.layer, unit.index]


def parse_unit(spec: str, model: CharRNN) -> Unit:
    """``L:K`` (cell state for LSTM-family models, output otherwise) or ``L:K:h`` / ``L:K:c``."""
    cfg = model.cfg
    default = "c" if cfg.model in LSTM_FAMILY else "h"
    parts = spec.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        layer, index = int(parts[0]), int(parts[1])
        state = parts[2] if len(parts) == 3 else default
    except ValueError:
        raise CharrnnError(f"--unit {spec!r}: use LAYER:UNIT, e.g. 1:37 (layer and unit counted from 0)") from None
    if state not in ("h", "c") or (state == "c" and cfg.model not in LSTM_FAMILY):
        allowed = "h or c" if cfg.model in LSTM_FAMILY else f"h (a {cfg.model} has no cell state)"
        raise CharrnnError(f"--unit {spec!r}: state must be {allowed}")
    if not 0 <= layer < cfg.layers or not 0 <= index < cfg.hidden:
        raise CharrnnError(f"--unit {spec!r}: this model has layers 0..{cfg.layers - 1} and units 0..{cfg.hidden - 1}")
    return Unit(layer, index, state)


def _piece_texts(pieces: list[bytes], ids: list[int]) -> list[tuple[str, int]]:
    """Each token's decoded text and the token position where it completes. A subword's byte
    pieces may split a character; those tokens join the next until the character is whole."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out: list[tuple[str, int]] = []
    for t, i in enumerate(ids):
        text = decoder.decode(pieces[i])
        if text:
            out.append((text, t))
    tail = decoder.decode(b"", final=True)
    if tail:
        out.append((tail, len(ids) - 1))
    return out


@torch.no_grad()
def trace(model: CharRNN, vocab: Vocab, ids: list[int]) -> Trace:
    """Read ``ids`` through the model and record what the module docstring lists."""
    if not ids:
        raise CharrnnError("the text is empty")
    model.eval()
    stepper = Stepper(model)
    paired = model.cfg.model in LSTM_FAMILY
    state = model.init_state(1)
    for t in start_ids(vocab, []):
        logits, state = stepper.step(torch.tensor([t]), state)
    pieces = vocab.token_bytes()
    logp = logits[0].log_softmax(-1)
    logps, tops, hs, cs = [], [], [], []
    for i in ids:
        logps.append(float(logp[i]))
        logits, state = stepper.step(torch.tensor([i]), state)
        logp = logits[0].log_softmax(-1)  # the next token's distribution: scored above, top-5 here
        top = torch.topk(logp, min(TOP_PREDICTIONS, logp.numel()))
        tops.append(list(zip(top.indices.tolist(), top.values.exp().tolist())))
        layers = state_tensors(state)
        hs.append(layers[0][:, 0].numpy().copy())
        if paired:
            cs.append(layers[1][:, 0].numpy().copy())
    bits_per_token = -np.array(logps) / math.log(2)
    ends = _piece_texts(pieces, ids)
    segments, bits, predictions, at = [], [], [], []
    start = 0
    for text, end in ends:
        segments.append(text)
        bits.append(bits_per_token[start : end + 1].sum())
        predictions.append([(pieces[j].decode("utf-8", "replace"), round(q, 4)) for j, q in tops[end]])
        at.append(end)
        start = end + 1
    states = {"h": np.stack(hs)[at]}
    if paired:
        states["c"] = np.stack(cs)[at]
    return Trace(segments=segments, bits=np.array(bits), predictions=predictions, states=states)


# ---------------------------------------------------------------------------------------------
# Text features and the units that track them
# ---------------------------------------------------------------------------------------------

# Who speaks: a line of its own ("ROMEO:", "First Citizen:", a screenplay cue in capitals such
# as "JOHN (V.O.)", short and not a scene heading), or the "NAME:" that opens a line of a
# transcript ("ANNA: the sea is open.").
_CUE_PREFIX = re.compile(r"^[A-Z][A-Za-z'.-]*( [A-Z][A-Za-z'.-]*){0,3}:")
_HEADING = re.compile(r"^(INT|EXT|INT\./EXT|I/E)[. ]")


def cue_span(line: str) -> int:
    """How many leading characters of ``line`` (without its newline) name a speaker."""
    s = line.strip()
    if s and len(s) <= 40:
        letters = [ch for ch in s if ch.isalpha()]
        capitals = bool(letters) and all(ch.isupper() for ch in letters)
        if (capitals and not _HEADING.match(s) and not s.endswith(("TO:", "."))) or _CUE_PREFIX.fullmatch(s):
            return len(line)
    m = _CUE_PREFIX.match(line)
    return m.end() if m else 0


def _char_features(text: str) -> dict[str, list[float]]:
    """Each feature's value after reading each character."""
    quote = paren = column = 0
    out: dict[str, list[float]] = {
        "inside quotes": [],
        "inside parentheses": [],
        "position in line": [],
        "inside a speaker cue": [],
    }
    lines = text.split("\n")
    line_no, span = 0, cue_span(lines[0])
    for ch in text:
        if ch == '"':
            quote ^= 1
        elif ch in OPEN_QUOTES:
            quote = 1
        elif ch in CLOSE_QUOTES:
            quote = 0
        elif ch in "([":
            paren += 1
        elif ch in ")]":
            paren = max(0, paren - 1)
        # A whole-line cue includes its newline; a "NAME:" prefix ends at the colon.
        out["inside a speaker cue"].append(float(column < span or (ch == "\n" and 0 < span == column)))
        if ch == "\n":
            column, paren = 0, 0
            line_no += 1
            span = cue_span(lines[line_no])
        else:
            column += 1
        out["inside quotes"].append(float(quote))
        out["inside parentheses"].append(float(paren > 0))
        out["position in line"].append(float(column))
    return out


def features(segments: list[str]) -> dict[str, np.ndarray]:
    """Each feature's value after reading each segment (at its last character); features the
    text never shows are left out (a constant has no correlation)."""
    per_char = _char_features("".join(segments))
    ends = np.cumsum([len(seg) for seg in segments]) - 1
    found = {name: np.asarray(values, dtype=np.float64)[ends] for name, values in per_char.items()}
    return {name: v for name, v in found.items() if len(v) > 1 and v.std() > 0}


def correlations(values: np.ndarray, feature: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``values`` (positions, units) with ``feature``;
    a unit that never moves scores 0."""
    x = values - values.mean(0)
    y = feature - feature.mean()
    denom = np.sqrt((x * x).sum(0) * (y * y).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x * y[:, None]).sum(0) / denom
    scores: np.ndarray = np.nan_to_num(r)
    return scores


def rank_units(tr: Trace, top: int = 5) -> dict[str, list[tuple[Unit, float]]]:
    """For each feature the text shows, the ``top`` units (any layer, h or c) whose activation
    correlates most strongly with it, with the correlation (its sign says which way)."""
    ranking = {}
    for name, feature in features(tr.segments).items():
        scored = []
        for kind, values in tr.states.items():
            n, layers, hidden = values.shape
            r = correlations(values.reshape(n, layers * hidden).astype(np.float64), feature)
            for flat in np.argsort(-np.abs(r))[:top]:
                scored.append((Unit(int(flat) // hidden, int(flat) % hidden, kind), float(r[flat])))
        scored.sort(key=lambda pair: -abs(pair[1]))
        ranking[name] = scored[:top]
    return ranking
