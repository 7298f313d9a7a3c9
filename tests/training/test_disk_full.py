"""A real full disk: a tmpfs of a few MB mounted for the test, filled by training, a cache, an
export, a screenplay, an adapted copy. Each write stops with one line, exit 2, the previous file
intact and no temp file left; a run resumed after space is freed continues bit-exactly."""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import PAGE, TINY, fill, run_cli

from charrnn.errors import CharrnnError
from charrnn.model import checkpoint
from charrnn.runtime.distributed import World
from charrnn.training.metrics import Metrics
from charrnn.training.position import RunState

TEMP = re.compile(r"^\..+\.tmp\d+$")
# Wide enough that a checkpoint's large tensors are written past the end of the free space: torch
# then reports the short write as a RuntimeError.
RUN = [*TINY, "--hidden", "96", "--steps", "60", "--eval-every", "20", "--log-every", "5", "--quiet"]


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP.match(p.name)]


def _footprint(folder: Path) -> int:
    return sum((p.stat().st_size + PAGE - 1) // PAGE * PAGE + PAGE for p in folder.rglob("*") if p.is_file())


def test_training_into_a_full_disk_stops_cleanly_and_resumes_bit_exactly(tmp_path, small_disk, repetitive_corpus):
    ref = tmp_path / "ref"
    assert run_cli("train", repetitive_corpus, *RUN, "--out", ref).exit_code == 0
    best, last = (ref / "best.pt").stat().st_size, (ref / "last.pt").stat().st_size
    # Room for the whole run but for half the checkpoints again: the first validation's best.pt
    # and last.pt fit, and at the second one last.pt's temp file fills the disk.
    filler = fill(small_disk, _footprint(ref) + (best + last) // 2)
    run = small_disk / "run"
    r = run_cli("train", repetitive_corpus, *RUN, "--out", run)
    assert r.exit_code == 2
    assert r.stderr.splitlines() == [
        f"error: no space left on device while writing {run}/last.pt; the previous checkpoint is intact"
    ]
    assert _temps(run) == []
    assert checkpoint.load(run / "last.pt")["step"] == 20
    assert all(json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
    filler.unlink()
    assert run_cli("train", "--resume", run, "--quiet").exit_code == 0
    mine, theirs = checkpoint.load(run / "last.pt"), checkpoint.load(ref / "last.pt")
    assert mine["step"] == theirs["step"] == 60
    for k, v in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][k], v), k
    for k, v in theirs["resume"]["optimizer"]["state"].items():
        assert all(torch.equal(mine["resume"]["optimizer"]["state"][k][n], t) for n, t in v.items())


def test_a_cache_that_does_not_fit_is_one_line_and_leaves_nothing(tmp_path, small_disk):
    corpus = tmp_path / "big.txt"
    corpus.write_text("the lamp is dark and the door is open.\n" * 20_000)  # 780 kB of ids
    fill(small_disk, 256 * 1024)
    run = small_disk / "run"
    r = run_cli("train", corpus, *RUN, "--out", run)
    assert r.exit_code == 2
    assert re.fullmatch(
        rf"error: no space left on device while writing {run}/\.cache/[^./]\S+; no partial cache is left\n", r.stderr
    )
    assert _temps(small_disk) == []


@pytest.mark.parametrize(
    "name,args",
    [
        ("scene.pdf", ["sample", "{run}", "--format", "pdf", "-o", "{out}", "--length", "200"]),
        ("adapted.pt", ["sample", "{run}", "--adapt", "{corpus}", "--save-adapted", "{out}", "--length", "20"]),
        ("model.onnx", ["export", "{run}", "-o", "{out}"]),
    ],
    ids=["screenplay-pdf", "save-adapted", "onnx-export"],
)
def test_outputs_onto_a_full_disk_keep_the_previous_file(small_disk, trained_run, repetitive_corpus, name, args):
    previous = small_disk / name
    previous.write_bytes(b"the previous file")
    fill(small_disk, 0)
    r = run_cli(*[a.format(run=trained_run, out=previous, corpus=repetitive_corpus) for a in args])
    assert r.exit_code == 2
    assert re.fullmatch(
        rf"error: no space left on device while writing {previous}; the previous \w+ is intact",
        r.stderr.splitlines()[-1],
    )
    assert previous.read_bytes() == b"the previous file"
    assert _temps(small_disk) == []


def test_a_metrics_line_that_does_not_fit_is_cut_back_off(small_disk):
    out = small_disk / "run"
    out.mkdir()
    metrics = Metrics(out, World(), RunState(), torch.device("cpu"), 1.0, 1.0)
    # One whole line that ends 60 bytes short of a page: the next line fills the page, then fails.
    (out / "metrics.jsonl").write_text(json.dumps({"pad": "x" * (PAGE - 60 - 12)}) + "\n")
    before = (out / "metrics.jsonl").read_bytes()
    fill(small_disk, 0)
    line = {"step": 5, "train_bpc": 3.2, "val_bpc": None, "lr": 0.01, "chars_per_s": 1.0, "elapsed": 0.1}
    with pytest.raises(CharrnnError, match=r"^no space left on device while writing .*metrics\.jsonl; its earlier"):
        metrics.write(line)
    assert (out / "metrics.jsonl").read_bytes() == before
