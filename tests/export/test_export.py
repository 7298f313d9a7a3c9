"""`charrnn export`: the ONNX graph scores text as `charrnn eval` does, for every cell and vocabulary,
and a sampler with only numpy and onnxruntime reads everything it needs from the file."""

import base64
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import run_cli

import charrnn
from charrnn.data.vocab import CharVocab, SubwordVocab
from charrnn.model import checkpoint
from charrnn.model.network import CELLS, LSTM_FAMILY, CharRNN, ModelConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "onnx_sample.py"
# The operator each cell's layers must become (CIFG has none: a Scan of its elementwise step).
OPERATOR = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "peephole": "LSTM", "cifg": "Scan"}

BLOCKER = """
import os, sys
_blocked = set(os.environ["CHARRNN_TEST_BLOCK"].split(","))
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _blocked:
            raise ImportError(f"{name} is blocked for this test")
sys.meta_path.insert(0, _Blocker())
"""


def _blocked_env(tmp_path: Path, modules: str) -> dict:
    """An environment where importing any of ``modules`` fails: a sitecustomize on PYTHONPATH."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "CHARRNN_TEST_BLOCK": modules}


def _save(tmp_path: Path, cell: str, vocab, seed: int = 0) -> Path:
    """A checkpoint of a model with every weight drawn at random (peepholes included, which
    start at 0 in training), so each parameter's place in the graph matters."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab.size, model=cell, layers=2, hidden=24, embed=12, dropout=0.1)
    model = CharRNN(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)
    path = tmp_path / f"{cell}-{vocab.kind}.pt"
    checkpoint.save({"model_config": cfg.to_dict(), "vocab": vocab.to_state(), "state_dict": model.state_dict()}, path)
    return path


def _text(corpus: Path) -> str:
    # Under 4,096 tokens `charrnn eval` reads the text as one row, as the graph does here.
    return corpus.read_text()[:3000]


def _export(tmp_path: Path, ckpt: Path) -> Path:
    out = tmp_path / f"{ckpt.stem}.onnx"
    r = run_cli("export", ckpt, "-o", out)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == f"wrote {out}\n" and r.stdout == ""
    return out


def _onnx_bpc(path: Path, ids: np.ndarray) -> tuple[float, list[np.ndarray], np.ndarray]:
    """Bits per character of ``ids`` through the graph in one call (characters counted from the
    token bytes in the metadata), the final state and the logits."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    cfg = json.loads(meta["charrnn.model_config"])
    state = {n: np.zeros((cfg["layers"], 1, cfg["hidden"]), np.float32) for n in meta["charrnn.state"].split(",")}
    logits, *final = session.run(None, {"ids": ids[None].astype(np.int64), **state})
    z = logits[0, :-1].astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nats = -logp[np.arange(len(ids) - 1), ids[1:]].sum()
    pieces = [base64.b64decode(p) for p in json.loads(meta["charrnn.token_bytes"])]
    chars = sum(sum(1 for b in pieces[i] if b & 0xC0 != 0x80) for i in ids[1:].tolist())
    return nats / math.log(2) / chars, final, logits


def _check_equal_to_eval(tmp_path: Path, ckpt: Path, text: str) -> Path:
    path = _export(tmp_path, ckpt)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    model, vocab = checkpoint.build_model(checkpoint.load(ckpt))
    ids = vocab.encode(text).astype(np.int64)
    text_file = tmp_path / "text.txt"
    text_file.write_text(text)
    r = run_cli("eval", ckpt, text_file, "--json")
    assert r.exit_code == 0, r.stderr
    bpc, final, logits = _onnx_bpc(path, ids)
    assert abs(bpc - json.loads(r.stdout)["bpc"]) < 1e-4
    with torch.no_grad():
        want_logits, want = model(torch.from_numpy(ids)[None])
    want = want if isinstance(want, tuple) else (want,)
    for got, expected in zip(final, want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits, want_logits.numpy(), rtol=0, atol=1e-4)
    return path


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_scores_as_charrnn_eval(tmp_path, repetitive_corpus, cell):
    text = _text(repetitive_corpus)
    path = _check_equal_to_eval(tmp_path, _save(tmp_path, cell, CharVocab.build(text)), text)
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count(OPERATOR[cell]) == 2, ops  # one per layer: the time loop is not unrolled
    names = ["ids", "h", "c"] if cell in LSTM_FAMILY else ["ids", "h"]
    assert [i.name for i in graph.input] == names


def test_trained_model_scores_as_charrnn_eval(tmp_path, trained_run, repetitive_corpus):
    _check_equal_to_eval(tmp_path, trained_run / "best.pt", _text(repetitive_corpus))


def _bpe(corpus: Path) -> SubwordVocab:
    lines = corpus.read_text().splitlines()
    return SubwordVocab.train("bpe", 300, iter(lines), len(set("".join(lines))))


def test_subword_model_scores_as_charrnn_eval(tmp_path, repetitive_corpus):
    vocab = _bpe(repetitive_corpus)
    text = _text(repetitive_corpus) + "ñ日本 🎬\n"  # byte-fallback pieces: chars differ from bytes
    path = _check_equal_to_eval(tmp_path, _save(tmp_path, "lstm", vocab), text)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert base64.b64decode(meta["charrnn.sentencepiece_model"]) == vocab.model
    assert meta["charrnn.vocab_kind"] == "bpe" and "charrnn.chars" not in meta


@pytest.mark.parametrize("cell", ["lstm", "cifg"])
def test_one_file_scores_and_steps_any_batch(tmp_path, repetitive_corpus, cell):
    """Dynamic batch and length: a window of 3 rows, then one token at a time from its state,
    gives the logits of the whole sequence in one call."""
    text = _text(repetitive_corpus)
    ckpt = _save(tmp_path, cell, CharVocab.build(text), seed=1)
    session = ort.InferenceSession(str(_export(tmp_path, ckpt)), providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(0).integers(0, 20, (3, 12))
    zeros = np.zeros((2, 3, 24), np.float32)
    state = {"h": zeros, "c": zeros}
    whole = session.run(None, {"ids": ids, **state})[0]
    logits, *carried = session.run(None, {"ids": ids[:, :5], **state})
    steps = [logits]
    for t in range(5, 12):
        logits, *carried = session.run(None, {"ids": ids[:, t : t + 1], **dict(zip(state, carried))})
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, 1), whole, rtol=0, atol=1e-5)


def test_metadata_describes_the_model(tmp_path, trained_run):
    path = _export(tmp_path, trained_run)
    model, vocab = checkpoint.build_model(checkpoint.load(trained_run))
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["charrnn.version"] == charrnn.__version__
    assert meta["charrnn.chars"] == vocab.chars and meta["charrnn.vocab_kind"] == "char"
    assert json.loads(meta["charrnn.model_config"]) == model.cfg.to_dict()
    assert [base64.b64decode(p) for p in json.loads(meta["charrnn.token_bytes"])] == vocab.token_bytes()


def test_bad_input_is_one_line(tmp_path, trained_run):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    cases = [
        ((foreign, "-o", tmp_path / "a.onnx"), "not a charrnn checkpoint"),
        ((corrupt, "-o", tmp_path / "b.onnx"), "corrupt"),
        ((trained_run, "-o", tmp_path / "missing" / "c.onnx"), "cannot write"),
        ((trained_run, "-o", tmp_path), "cannot write"),
        ((trained_run, "-o", tmp_path / "d.onnx", "--format", "tflite"), "--format must be one of onnx"),
    ]
    for args, message in cases:
        r = run_cli("export", *args)
        assert r.exit_code == 2 and r.stderr.startswith("error: ") and message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.pt", "foreign.pt"]


def test_without_the_extra_says_how_to_install(tmp_path, trained_run):
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "export", str(trained_run), "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        env=_blocked_env(tmp_path, "onnx"),
        timeout=120,
    )
    assert (
        r.returncode == 2
        and r.stderr == "error: exporting to ONNX needs the onnx package: pip install 'charrnn[onnx]'\n"
    )


def _example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = _blocked_env(tmp_path, "torch,charrnn")
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=120)


def test_example_samples_with_numpy_and_onnxruntime_only(tmp_path, trained_run, repetitive_corpus):
    path = str(_export(tmp_path, trained_run))
    probe = subprocess.run(
        [sys.executable, "-c", "import torch"], capture_output=True, env=_blocked_env(tmp_path, "torch,charrnn")
    )
    assert probe.returncode != 0  # the blocker works: the example cannot lean on torch
    a = _example(tmp_path, path, "--prime", "ANNA", "--length", "300", "--temp", "0.3", "--seed", "1")
    b = _example(tmp_path, path, "--prime", "ANNA", "--length", "300", "--temp", "0.3", "--seed", "1")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stderr == ""
    assert a.stdout.startswith("ANNA") and len(a.stdout) == len("ANNA") + 300 + 1
    words = a.stdout.split()
    known = set(repetitive_corpus.read_text().split())
    assert sum(w in known for w in words) > 0.7 * len(words)


def test_example_decodes_a_subword_model(tmp_path, repetitive_corpus):
    path = str(_export(tmp_path, _save(tmp_path, "gru", _bpe(repetitive_corpus))))
    r = _example(tmp_path, path, "--length", "120", "--seed", "2")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 121
