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

import numpy as np

from pathlib import Path

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


def render(tr: Trace, title: str, subtitle: str, units: list[Unit], ranking: dict[str, list[tuple[Unit, float]]]) -> str:
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
    rows = "".join(
        f"<tr><th>{html.escape(feature)}</th><td>"
        + " ".join(
            f'<a href="#unit={u.name}" class="unit">{u.layer}:{u.index}:{u.state} <small>r={r:+.2f}</small></a>'
            for u, r in scored
        )
        + "</td></tr>"
        for feature, scored in ranking.items()
    ) or '<tr><td>The text shows none of the features (quotes, parentheses, several lines, speaker cues).</td></tr>'
    chars = sum(len(s) for s in tr.segments)
    mean_bits = float(tr.bits.sum()) / max(1, chars)
    return _PAGE.format(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        stats=f"{chars:,} characters, {mean_bits:.3f} bits per character under this model",
        options=options,
        rows=rows,
        spans=spans,
        data=payload,
        script=_SCRIPT,
        style=_STYLE,
    )


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 .2em; }
.sub { color: #555; margin: 0 0 1em; }
#controls { display: flex; gap: 1.5em; align-items: center; flex-wrap: wrap; margin-bottom: 1em; }
#legend { display: inline-flex; align-items: center; gap: .4em; color: #555; }
#legend .bar { width: 160px; height: 12px; border: 1px solid #ccc; }
table { border-collapse: collapse; margin-bottom: 1em; }
th { text-align: left; font-weight: 600; padding: .2em 1em .2em 0; white-space: nowrap; }
td { padding: .2em 0; }
a.unit { margin-right: .8em; font-family: ui-monospace, monospace; text-decoration: none; color: #0645ad; }
a.unit.on { font-weight: bold; text-decoration: underline; }
#text { font: 14px/1.5 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-all;
        border: 1px solid #ddd; padding: 1em; }
#text .t { cursor: default; }
#text .t:hover { outline: 1px solid #333; }
#tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #999; padding: .5em .7em;
       box-shadow: 0 2px 6px rgba(0,0,0,.2); font: 13px/1.4 ui-monospace, monospace; min-width: 14em; }
#tip .row { display: flex; align-items: center; gap: .5em; }
#tip .tok { width: 3em; white-space: pre; }
#tip .p { height: 8px; background: #4a7fd0; }
"""

_SCRIPT = r"""
const data = JSON.parse(document.getElementById("data").textContent);
const spans = Array.from(document.querySelectorAll("#text .t"));
const select = document.getElementById("mode");
const tip = document.getElementById("tip");
let mode = "surprisal";

function surprisal(bits) {
  const t = Math.min(Math.max(bits, 0) / data.fullBits, 1);
  return `rgb(${Math.round(255 - 35 * t)},${Math.round(255 - 215 * t)},${Math.round(255 - 215 * t)})`;
}
function diverging(s) {  // red for positive, blue for negative, white at 0
  const a = Math.min(Math.abs(s), 1);
  const hi = Math.round(255 - 35 * a), lo = Math.round(255 - 215 * a);
  return s >= 0 ? `rgb(${hi},${lo},${lo})` : `rgb(${lo},${lo},${hi})`;
}
function show(name) {
  mode = data.series[name] ? name : "surprisal";
  select.value = mode;
  const legend = document.getElementById("legend");
  if (mode === "surprisal") {
    spans.forEach((el, i) => { el.style.background = surprisal(data.bits[i]); });
    legend.innerHTML = `0 bits <span class="bar" style="background:linear-gradient(90deg,${surprisal(0)},${surprisal(data.fullBits)})"></span> ${data.fullBits}+ bits`;
  } else {
    const v = data.series[mode];
    const scale = Math.max(1e-6, ...v.map(Math.abs));
    spans.forEach((el, i) => { el.style.background = diverging(v[i] / scale); });
    legend.innerHTML = `${(-scale).toFixed(2)} <span class="bar" style="background:linear-gradient(90deg,${diverging(-1)},${diverging(0)},${diverging(1)})"></span> +${scale.toFixed(2)}`;
  }
  document.querySelectorAll("a.unit").forEach(a => a.classList.toggle("on", a.getAttribute("href") === "#unit=" + mode));
}
function fromHash() {
  const m = location.hash.match(/^#unit=(.+)$/);
  show(m ? decodeURIComponent(m[1]) : "surprisal");
}
function visible(tok) {
  return tok.replace(/\n/g, "\u21b5").replace(/ /g, "\u2423").replace(/\t/g, "\u2192");
}
function escapeHtml(s) {
  return s.replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]);
}
function hover(el, x, y) {
  const i = +el.dataset.i;
  let head = `<b>${escapeHtml(visible(data.segments[i]))}</b> &middot; ${data.bits[i].toFixed(2)} bits`;
  if (mode !== "surprisal") head += ` &middot; ${mode} = ${data.series[mode][i].toFixed(3)}`;
  const rows = data.predictions[i].map(([tok, p]) =>
    `<div class="row"><span class="tok">${escapeHtml(visible(tok))}</span><span class="p" style="width:${Math.round(p * 120)}px"></span>${(100 * p).toFixed(1)}%</div>`
  ).join("");
  tip.innerHTML = `<div>${head}</div><div>next:</div>${rows}`;
  tip.hidden = false;
  tip.style.left = Math.min(x + 12, window.innerWidth - tip.offsetWidth - 8) + "px";
  tip.style.top = Math.min(y + 16, window.innerHeight - tip.offsetHeight - 8) + "px";
}
document.getElementById("text").addEventListener("mouseover", e => {
  if (e.target.classList.contains("t")) hover(e.target, e.clientX, e.clientY);
});
document.getElementById("text").addEventListener("mouseleave", () => { tip.hidden = true; });
select.addEventListener("change", () => { location.hash = select.value === "surprisal" ? "" : "unit=" + select.value; show(select.value); });
window.addEventListener("hashchange", fromHash);
fromHash();
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<h1>{title}</h1>
<p class="sub">{subtitle} &middot; {stats}</p>
<div id="controls">
<label>Colour by <select id="mode">{options}</select></label>
<span id="legend"></span>
</div>
<table id="ranking"><caption style="text-align:left;color:#555">Units whose activation best tracks each feature
(Pearson r over this text; LAYER:UNIT:STATE, c = cell state, h = output)</caption>{rows}</table>
<div id="text">{spans}</div>
<div id="tip" hidden></div>
<script id="data" type="application/json">{data}</script>
<script>{script}</script>
</body>
</html>
"""


def write_page(checkpoint_path: Path, text: str, output: Path, units: list[str], length: int, offset: int, top: int,
               unknown: str) -> dict[str, list[tuple[Unit, float]]]:
    """``charrnn viz``: read ``length`` characters of ``text`` (a file or - for stdin) from
    ``offset`` through the model, write the page, and return the unit ranking it shows."""
    from charrnn.model import checkpoint
    from charrnn.data import corpus
    from charrnn.data.vocab import encode_prime
    from charrnn.viz.trace import parse_unit, rank_units, trace

    if text != corpus.STDIN and not Path(text).exists():
        raise CharrnnError(f"{text}: no such file (TEXT is a file; for a literal text: echo '...' | charrnn viz CHECKPOINT -)")
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
