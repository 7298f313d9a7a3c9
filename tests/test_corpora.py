"""corpora/catalogue.py: the benches' names for corpora resolve, and a changed copy is caught."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "corpora"))
import catalogue  # noqa: E402


def test_the_listing_describes_every_corpus_and_the_bundled_ones_are_there():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "corpora" / "catalogue.py")], capture_output=True, text=True, timeout=120
    )
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["name"] for r in rows] == catalogue.NAMES
    bundled = {r["name"]: r for r in rows if r["where"] == "bundled"}
    assert bundled["demo"]["present"] and bundled["demo"]["files"] == 1 and bundled["demo"]["utf8"]
    assert bundled["screenplays"]["files"] == len(list((ROOT / "charrnn" / "demo").glob("*.fountain")))
    shared = [r for r in rows if r["where"] == "shared" and r["present"]]
    unchecked = [r["name"] for r in shared if r.get("sha256_ok") is not True]
    assert not unchecked, f"not matching ../shared/corpora/SHA256SUMS: {unchecked}"
    assert proc.returncode == 0, proc.stderr


def test_a_copy_that_differs_from_its_checksum_is_reported(tmp_path):
    copy = tmp_path / "earnest.txt"
    copy.write_text("not the play\n")
    entry = catalogue.find("earnest")
    row = catalogue.describe(entry, copy, {"earnest.txt": "0" * 64})
    assert row["present"] and row["bytes"] == 13 and row["sha256_ok"] is False


def test_a_file_that_is_not_utf8_says_so(tmp_path):
    odd = tmp_path / "latin1.txt"
    odd.write_bytes("caf\xe9\n".encode("latin-1"))
    row = catalogue.describe(catalogue.find("demo"), odd, {})
    assert row["utf8"] is False and "sha256_ok" not in row


def test_the_panel_is_the_one_docs_auto_measures():
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    command = next(
        line for line in page.splitlines() if "--minutes 2 --who" in line and line.startswith("python bench/auto.py")
    )
    assert command.split("--corpora ")[1].split()[0].split(",") == catalogue.PANEL
