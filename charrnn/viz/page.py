"""The ``viz`` page: a text coloured by the model's surprisal or by one unit's activation.

One self-contained HTML file (inline style, script and data; nothing fetched), readable in
any browser offline. The page is coloured by surprisal as written, so it shows something even
with scripts off; the script recolours it for any listed unit, keeps the choice in the URL
(``#unit=1:37:c``, so a view can be bookmarked or shared) and shows on hover what the model
expected next.
"""

from __future__ import annotations

import html
import json
from importlib.resources import files
from pathlib import Path

import numpy as np

from charrnn.errors import CharrnnError
from charrnn.viz.trace import Trace, Unit

SURPRISAL = "surprisal"
SURPRISAL_FULL_BITS = 6.0  # bits at which the surprisal colour saturates


def surprisal_colour(bits: float) -> str:
    """White (expected) to red (a surprise); the script computes the same scale."""
    t = min(max(bits, 0.0) / SURPRISAL_FULL_BITS, 1.0)
    return f"rgb({round(255 - 35 * t)},{round(255 - 215 * t)},{round(255 - 215 * t)})"


def _shown(piece: str) -> str:
    """A segment as it is drawn inside the text: a newline keeps a visible mark."""
    return html.escape(piece.replace("\n", "\u21b5\n"))


def _unit_label(unit: Unit) -> str:
    kind = "cell state" if unit.state == "c" else "output"
    return f"layer {unit.layer} unit {unit.index} ({kind})"


def render(
    tr: Trace, title: str, subtitle: str, units: list[Unit], ranking: dict[str, list[tuple[Unit, float]]]
) -> str:
    """The page for a trace: the units asked for first, then the best-ranked ones."""
    listed: dict[str, str] = {}
    for unit in units:
        listed[unit.name] = f"{_unit_label(unit)}, chosen"
    for feature, scored in ranking.items():
        for unit, r in scored:
            listed.setdefault(unit.name, f"{_unit_label(unit)}, {feature} r={r:+.2f}")
    series = {}
    for name in listed:
        layer, index, state = name.split(":")
        series[name] = np.round(tr.activation(Unit(int(layer), int(index), state)), 4).tolist()
    data = {
        "segments": tr.segments,
        "bits": np.round(tr.bits, 3).tolist(),
        "predictions": tr.predictions,
        "series": series,
        "labels": listed,
        "fullBits": SURPRISAL_FULL_BITS,
    }
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    spans = "".join(
        f'<span class="t" data-i="{i}" style="background:{surprisal_colour(b)}">{_shown(seg)}</span>'
        for i, (seg, b) in enumerate(zip(tr.segments, tr.bits))
    )
    options = f'<option value="{SURPRISAL}">surprisal (bits per character)</option>' + "".join(
        f'<option value="{html.escape(name)}">{html.escape(label)}</option>' for name, label in listed.items()
    )
    rows = (
        "".join(
            f"<tr><th>{html.escape(feature)}</th><td>"
            + " ".join(
                f'<a href="#unit={u.name}" class="unit">{u.layer}:{u.index}:{u.state} <small>r={r:+.2f}</small></a>'
                for u, r in scored
            )
            + "</td></tr>"
            for feature, scored in ranking.items()
        )
        or "<tr><td>The text shows none of the features (quotes, parentheses, several lines, speaker cues).</td></tr>"
    )
    chars = sum(len(s) for s in tr.segments)
    mean_bits = float(tr.bits.sum()) / max(1, chars)
    return _asset("page.html").format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        stats=f"{chars:,} characters, {mean_bits:.3f} bits per character under this model",
        options=options,
        rows=rows,
        spans=spans,
        data=payload,
        script=_asset("page.js"),
        style=_asset("page.css"),
    )


def _asset(name: str) -> str:
    """The page's template, style and script, kept beside this module as package data."""
    return files("charrnn.viz").joinpath(name).read_text(encoding="utf-8")


def write_page(
    checkpoint_path: Path, text: str, output: Path, units: list[str], length: int, offset: int, top: int, unknown: str
) -> dict[str, list[tuple[Unit, float]]]:
    """``charrnn viz``: read ``length`` characters of ``text`` (a file or - for stdin) from
    ``offset`` through the model, write the page, and return the unit ranking it shows."""
    from charrnn.data import corpus
    from charrnn.data.vocab import encode_prime
    from charrnn.model import checkpoint
    from charrnn.viz.trace import parse_unit, rank_units, trace

    if text != corpus.STDIN and not Path(text).exists():
        raise CharrnnError(
            f"{text}: no such file (TEXT is a file; for a literal text: echo '...' | charrnn viz CHECKPOINT -)"
        )
    ckpt = checkpoint.load(checkpoint_path)
    model, vocab = checkpoint.build_model(ckpt)
    chosen = [parse_unit(u, model) for u in units]
    sources = corpus.open_sources([text])
    try:
        body = corpus.read_text(sources)[offset : offset + length]
    finally:
        corpus.release(sources)
    if not body:
        raise CharrnnError(f"{text}: no text to show" + (f" after --offset {offset}" if offset else ""))
    tr = trace(model, vocab, encode_prime(vocab, body, unknown, what="the text"))
    ranking = rank_units(tr, top)
    cfg = model.cfg
    subtitle = f"{Path(ckpt['path'])} · {cfg.model} {cfg.layers}x{cfg.hidden}, {vocab.kind} vocabulary of {vocab.size}"
    page = render(tr, f"charrnn viz: {Path(text).name if text != corpus.STDIN else 'stdin'}", subtitle, chosen, ranking)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as e:
        raise CharrnnError(f"cannot write {output} ({e.strerror or e})") from None
    return ranking
