"""Seeing what the model learned: training curves, TensorBoard scalars, the viz page (also as a
browser renders it), and the unit ranking behind it."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from charrnn.data.vocab import CharVocab
from charrnn.errors import CharrnnError
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.viz.trace import Trace, Unit, _char_features, features, parse_unit, rank_units, trace

PLAY = 'ANNA:\nThe sea is "open", she said (softly).\nBORIS: No.\n'


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, repetitive_corpus) -> Path:
    out = tmp_path_factory.mktemp("second")
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--hidden",
        "24",
        "--steps",
        "60",
        "--eval-every",
        "20",
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    return out


# -- plot ----------------------------------------------------------------------------------------


def test_plot_overlays_runs_in_a_png_of_the_stated_size(trained_run, second_run, tmp_path):
    from matplotlib.image import imread

    png = tmp_path / "curves.png"
    r = run_cli("plot", trained_run, second_run, "-o", png)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and f"wrote {png}" in r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(png)
    assert image.shape[:2] == (450, 1200)  # 12 x 4.5 inches at 100 dpi
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # curves, text and antialiasing, not a blank canvas


def test_plot_writes_svg_too(trained_run, tmp_path):
    svg = tmp_path / "curves.svg"
    assert run_cli("plot", trained_run, "-o", svg, "--title", "my run").exit_code == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text


def test_plot_errors_are_one_line(trained_run, tmp_path):
    r = run_cli("plot", tmp_path, "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "no metrics.jsonl" in r.stderr
    r = run_cli("plot", trained_run, "-o", tmp_path / "x.jpeg")
    assert r.exit_code == 2 and ".png, .svg, .pdf" in r.stderr
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "elapsed": 1, "train_bpc": 3}\n')
    r = run_cli("plot", tmp_path, "-o", tmp_path / "x.png")
    assert r.exit_code == 2 and "metrics.jsonl:1: not a charrnn metrics line" in r.stderr


def test_plot_ignores_a_torn_last_line(trained_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = (trained_run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(lines + '{"step": 9999, "elap')
    assert run_cli("plot", run, "-o", tmp_path / "c.png").exit_code == 0


def test_plot_without_matplotlib_says_how_to_get_it(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    r = run_cli("plot", trained_run, "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and "pip install 'charrnn[plot]'" in r.stderr


# -- tensorboard -----------------------------------------------------------------------------------


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_logs_the_metrics_and_resume_does_not_duplicate(repetitive_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    args = [
        "train",
        repetitive_corpus,
        *TINY,
        "--log-every",
        "10",
        "--eval-every",
        "20",
        "--out",
        out,
        "--quiet",
        "--tensorboard",
    ]
    assert run_cli(*args, "--steps", "40").exit_code == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    board = _scalars(out / "tensorboard")
    assert [s for s, _ in board["bpc/train"]] == [line["step"] for line in lines] == [10, 20, 30, 40]
    assert np.allclose([v for _, v in board["bpc/train"]], [line["train_bpc"] for line in lines], atol=1e-5)
    assert [s for s, _ in board["bpc/val"]] == [20, 40]
    assert {"lr", "chars_per_s"} <= set(board)
    # Continued: later steps are appended, none repeated (the flag is remembered by the run).
    r = run_cli("train", "--resume", out, "--steps", "60", "--quiet")
    assert r.exit_code == 0, r.stderr
    steps = [s for s, _ in _scalars(out / "tensorboard")["bpc/train"]]
    assert steps == [10, 20, 30, 40, 50, 60]
    # A fresh run over the same directory starts the curves over.
    assert run_cli(*args, "--steps", "20").exit_code == 0
    assert [s for s, _ in _scalars(out / "tensorboard")["bpc/train"]] == [10, 20]


def test_tensorboard_missing_is_a_clear_error(repetitive_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    r = run_cli("train", repetitive_corpus, *TINY, "--steps", "5", "--out", tmp_path, "--quiet", "--tensorboard")
    assert r.exit_code == 2 and "pip install 'charrnn[tensorboard]'" in r.stderr


# -- features, ranking and the trace ---------------------------------------------------------------


def test_features_follow_the_text_character_by_character():
    f = _char_features(PLAY)
    at = lambda name, i: f[name][i]
    q = PLAY.index('"')
    assert at("inside quotes", q - 1) == 0 and at("inside quotes", q) == 1 and at("inside quotes", q + 4) == 1
    assert at("inside quotes", PLAY.index('"', q + 1)) == 0  # the closing quote ends it
    p = PLAY.index("(")
    assert at("inside parentheses", p) == 1 and at("inside parentheses", PLAY.index(")")) == 0
    assert at("position in line", 0) == 1 and at("position in line", 5) == 0  # after "A"; after the newline
    assert f["position in line"][PLAY.index("The") + 2] == 3
    cue = f["inside a speaker cue"]
    assert cue[:6] == [1.0] * 6  # "ANNA:" and its newline: a line of its own
    assert cue[PLAY.index("The")] == 0
    b = PLAY.index("BORIS")
    assert cue[b : b + 6] == [1, 1, 1, 1, 1, 1] and cue[b + 6] == 0  # the "BORIS:" prefix, then speech


def test_features_without_quotes_leave_that_feature_out():
    found = features(list("plain words\nmore words\n"))
    assert "inside quotes" not in found and "position in line" in found


def test_ranking_finds_the_unit_that_tracks_a_feature():
    rng = np.random.default_rng(0)
    segments = list(PLAY * 3)
    n = len(segments)
    states = {"h": rng.normal(size=(n, 2, 8)), "c": rng.normal(size=(n, 2, 8))}
    quotes = features(segments)["inside quotes"]
    states["c"][:, 1, 5] = -2 * quotes + 0.05 * rng.normal(size=n)  # an anti-quote cell
    tr = Trace(segments=segments, bits=np.zeros(n), predictions=[[]] * n, states=states)
    (best, r), *_ = rank_units(tr, top=3)["inside quotes"]
    assert best == Unit(1, 5, "c") and r < -0.95


def _tiny_model(kind: str, text: str) -> tuple[CharRNN, CharVocab]:
    torch.manual_seed(0)
    vocab = CharVocab.build(text)
    model = CharRNN(ModelConfig(vocab_size=vocab.size, model=kind, layers=2, hidden=12, embed=6, dropout=0.0))
    return model.eval(), vocab


@pytest.mark.parametrize("kind", ["lstm", "gru", "peephole"])
def test_trace_matches_the_full_sequence_model(kind):
    model, vocab = _tiny_model(kind, PLAY)
    tr = trace(model, vocab, vocab.encode(PLAY).tolist())
    x = torch.tensor(vocab.encode("\n" + PLAY), dtype=torch.long)[None]
    with torch.no_grad():
        logits, state = model(x)
    logp = logits[0, :-1].log_softmax(-1)
    expected = -logp.gather(1, x[0, 1:, None])[:, 0].numpy() / math.log(2)
    assert np.allclose(tr.bits, expected, atol=1e-4)
    h = state[0] if isinstance(state, tuple) else state
    assert np.allclose(tr.states["h"][-1], h[:, 0].numpy(), atol=1e-5)
    if isinstance(state, tuple):
        assert np.allclose(tr.states["c"][-1], state[1][:, 0].numpy(), atol=1e-5)
    last = logits[0, -1].softmax(-1)
    assert [p for _, p in tr.predictions[-1]] == pytest.approx(last.topk(5).values.tolist(), abs=1e-4)
    assert tr.text == PLAY


def test_parse_unit():
    model, _ = _tiny_model("lstm", PLAY)
    assert parse_unit("1:7", model) == Unit(1, 7, "c")
    assert parse_unit("0:3:h", model) == Unit(0, 3, "h")
    for bad in ("2:0", "0:12", "x", "1:2:q", "1"):
        with pytest.raises(CharrnnError):
            parse_unit(bad, model)
    gru, _ = _tiny_model("gru", PLAY)
    assert parse_unit("0:1", gru) == Unit(0, 1, "h")
    with pytest.raises(CharrnnError, match="no cell state"):
        parse_unit("0:1:c", gru)


# -- the viz command -------------------------------------------------------------------------------


def _page_data(page: str) -> dict:
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1)
    return json.loads(blob)


@pytest.fixture(scope="module")
def page(trained_run, repetitive_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz") / "page.html"
    r = run_cli("viz", trained_run, repetitive_corpus, "-o", out, "--length", "300", "--unit", "0:3", "--unit", "0:4:h")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and "inside a speaker cue" in r.stderr and f"wrote {out}" in r.stderr
    return out


def test_viz_page_is_self_contained_and_coloured(page, repetitive_corpus):
    text = page.read_text()
    data = _page_data(text)
    shown = repetitive_corpus.read_text()[:300]
    assert "".join(data["segments"]) == shown
    assert text.count('<span class="t" ') == len(data["segments"]) == 300
    assert len(set(re.findall(r'<span class="t" data-i="\d+" style="background:(rgb\([^)]*\))', text))) > 5
    assert {"0:3:c", "0:4:h"} <= set(data["series"]) and len(data["series"]["0:3:c"]) == 300
    assert all(len(p) == 5 for p in data["predictions"])
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # nothing fetched from the network
    # The model learned the corpus: most characters cost little.
    assert np.median(data["bits"]) < 1.0


def test_viz_errors(trained_run, tmp_path):
    r = run_cli("viz", trained_run, tmp_path / "nope.txt")
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = run_cli("viz", trained_run, "-", "--unit", "9:0", "-o", tmp_path / "p.html", input="ANNA: the sea")
    assert r.exit_code == 2 and "layers 0..0" in r.stderr
    r = run_cli("viz", trained_run, "-", "-o", tmp_path / "p.html", input="ANNA: \u00e9")
    assert r.exit_code == 2 and "lacks" in r.stderr
    r = run_cli("viz", trained_run, "-", "-o", tmp_path / "p.html", "--unknown", "skip", input="ANNA: \u00e9")
    assert r.exit_code == 0 and "".join(_page_data((tmp_path / "p.html").read_text())["segments"]) == "ANNA: "


def test_viz_subword_segments_cover_the_text(tmp_path, repetitive_corpus):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--vocab",
        "bpe",
        "--vocab-size",
        "300",
        "--steps",
        "20",
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    text = 'ANNA: the lamp is "dark" \u00e9t\u00e9 \U0001f600\n'
    r = run_cli("viz", out, "-", "-o", tmp_path / "p.html", input=text)
    assert r.exit_code == 0, r.stderr
    data = _page_data((tmp_path / "p.html").read_text())
    assert "".join(data["segments"]) == text and len(data["segments"]) < len(text)


# -- in a browser ----------------------------------------------------------------------------------


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium to render the page in (.ci/run installs Debian's chromium where apt can)")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=120)


def test_browser_renders_the_page_and_runs_its_script(page, tmp_path):
    from matplotlib.image import imread

    data = _page_data(page.read_text())
    unit = re.search(r'<a href="#unit=([^"]+)" class="unit">', page.read_text()).group(1)  # the top-ranked unit
    dom = _chromium(tmp_path, "--dump-dom", f"{page.as_uri()}#unit={unit}").stdout.decode()
    spans = re.findall(r'<span class="t" data-i="(\d+)" style="background: ?(rgb\([^)]*\))', dom)
    assert len(spans) == len(data["segments"])
    # The script recoloured the text by the unit in the URL: red and blue both appear, which
    # the surprisal colouring (white to red) never gives, and the unit's link is marked.
    colours = {tuple(map(int, re.findall(r"\d+", c))) for _, c in spans}
    assert any(b > r for r, g, b in colours) and any(r > b for r, g, b in colours)
    assert f'<a href="#unit={unit}" class="unit on">' in dom

    shot = tmp_path / "shot.png"
    r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert shot.is_file(), r.stderr.decode()[-2000:]
    image = imread(shot)
    assert image.shape[:2] == (900, 1200)
    pixels = (image[..., :3] * 255).astype(int).reshape(-1, 3)
    reddish = (pixels[:, 0] - pixels[:, 2] > 40).mean()
    assert reddish > 0.001  # surprisal colours are on screen, not just black text on white


def test_browser_hover_shows_the_top_five_predictions(page, tmp_path):
    # The page as a person uses it: hovering a character opens the prediction box.
    hovered = tmp_path / "hover.html"
    probe = (
        "<script>const el = document.querySelector('#text .t[data-i=\"7\"]');"
        "el.dispatchEvent(new MouseEvent('mouseover', {bubbles: true, clientX: 50, clientY: 50}));</script>"
    )
    hovered.write_text(page.read_text().replace("</body>", probe + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", hovered.as_uri()).stdout.decode()
    tip = re.search(r'<div id="tip"([^>]*)>(.*?)</div>\s*<script', dom, re.S)
    assert tip and "hidden" not in tip.group(1)
    assert tip.group(2).count('class="row"') == 5 and "bits" in tip.group(2)
