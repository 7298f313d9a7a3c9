import os

import pytest
import torch
from conftest import run_cli, run_proc

from charrnn.errors import CharrnnError
from charrnn.model import checkpoint


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    torch.save({"format": "charrnn", "payload": _Evil(marker)}, bad)
    r = run_proc("sample", bad)
    assert r.returncode == 2 and b"refused" in r.stderr and r.stderr.count(b"\n") == 1
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["random", "truncated", "foreign", "text"])
def test_broken_checkpoints_are_one_line_errors(tmp_path, trained_run, kind):
    path = tmp_path / "x.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "truncated":
        path.write_bytes((trained_run / "best.pt").read_bytes()[:3000])
    elif kind == "foreign":
        torch.save(torch.nn.Linear(3, 3).state_dict(), path)
    else:
        path.write_text("hello")
    r = run_cli("sample", path)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoint.save({"model_config": {}, "vocab": {}, "state_dict": {}, "n": 1}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(
        CharrnnError, match="^no space left on device while writing .*; the previous checkpoint is intact$"
    ):
        checkpoint.save({"n": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_sample_without_any_run_says_how_to_train(tmp_path):
    r = run_proc("sample", "--length", "20", cwd=tmp_path)  # the bundled base samples, and says so
    assert r.returncode == 0 and b"charrnn train" in r.stderr and len(r.stdout) > 20
    with pytest.raises(CharrnnError, match="no trained model"):
        checkpoint.latest_run(tmp_path / "checkpoints")


def test_unwritable_out_is_reported(tmp_path, repetitive_corpus):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("train", repetitive_corpus, "--steps", "1", "--out", blocker / "run", "--quiet")
    assert r.exit_code != 0 and r.stderr.startswith("error: ")
