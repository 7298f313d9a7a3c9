"""The English base model's recipe: pretrain on ../shared/corpora/pg-english/, resumable in chunks,
then package what ships in the wheel (charrnn/base/english.pt).

    python bench/pretrain.py --out checkpoints/base-english --cues --chunk 2h   # again until it says done
    python bench/pretrain.py --out checkpoints/base-english --cues --package    # -> charrnn/base/english.pt

Each training call trains until the chunk's time is up (then the run saves last.pt and the next
call resumes it exactly) or the run is finished. The corpus is the manifest's books, each checked
against its sha256, in the manifest's order with four held-back books last: the validation split
is exactly those books (two plays, two novels), so the base's val bpc is on text it never read.
Gutenberg's text is hard-wrapped at ~72 characters, where screenplays, drafts and web text put a
paragraph on one line. ``--unwrap`` (for both calls) reads every other book of the manifest with
its wrapped paragraphs joined (``unwrap``; verse and indented lines kept): a candidate base that
knows both; measured against the first base in docs/benchmarks.md, it did not ship.
``--cues`` (for both calls; what ships since 2026-12-07) reads the training plays with their
speakers' cues laid out as a screenplay lays them out (``cue_layout``: ``HELMER. Yes.`` becomes
``HELMER`` over ``Yes.``), so that the base does not learn that a capitalised word and a full
stop start a speech, and a screenplay's scene heading is not read as one. Without either flag
the books are read as published: the first base, shipped before it.
The run is seeded and stops at a fixed step count, so on one kind of CPU every chunking of it
gives the same weights bit for bit. Packaging stores the last step's weights in bfloat16 (half
the bytes; the model still computes in float32) with what the run was in its metadata, scores
the held-back books with those very weights, and writes only deterministic values, so the file
is byte for byte what the recipe makes on the same kind of CPU.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpora"))
import catalogue  # noqa: E402

PG = catalogue.SHARED / "pg-english"
# Held back for validation, by e-book number: two plays and two novels of the corpus's kinds.
HELD_BACK = ("3618", "2542", "2852", "768")
STEPS = 6_000
FLAGS = [
    "--preset",
    "small",
    "--model",
    "lstm",
    "--layers",
    "2",
    "--hidden",
    "512",
    "--embed",
    "128",
    "--dropout",
    "0",
    "--seq-len",
    "100",
    "--batch-size",
    "32",
    "--lr",
    "1e-2",
    "--weight-decay",
    "0.1",
    "--steps",
    str(STEPS),
    "--patience",
    "0",
    "--seed",
    "1337",
    "--device",
    "cpu",
    "--precision",
    "float32",
]


def wrap_width(lines: list[str]) -> int:
    """The width a book was filled to: nearly its longest line (a few long lines are tables)."""
    lengths = sorted(len(line) for line in lines if line.strip())
    return lengths[int(0.995 * (len(lengths) - 1))] if lengths else 0


def unwrap(text: str) -> str:
    """Join the lines a filler broke: where the next line's first word would not have fitted.

    A greedy filler breaks a line only when the next word overflows the width, so a line that
    leaves room for it ended a verse line, a cue or a paragraph, and stays; indented lines stay.
    A line that ends in a hyphen broke a compound ("well-known") or a dash ("--"): it joins the
    next with no space, and the next word would have followed with none.
    """
    lines = text.split("\n")
    width = wrap_width(lines)
    out: list[str] = []
    previous = 0  # the length of the last line read, 0 after a blank one
    for line in lines:
        words = line.split()
        joint = "" if previous and out[-1].endswith("-") else " "
        if previous and words and not line[0].isspace() and previous + len(joint) + len(words[0]) > width:
            out[-1] += joint + line
        else:
            out.append(line)
        previous = len(line) if words else 0
    return "\n".join(out)


_ABBREVIATION = r"(?:Mr|Mrs|Ms|Dr|St|Rev|Mme|Mlle|MR|MRS|MS|DR|ST|REV|MME|MLLE)\. "
_WORD = r"[A-Z][A-Za-z'’-]*"
# A speaker's cue opening a paragraph: a name of up to four capitalised words (an abbreviation
# such as "Mrs." may lead it), perhaps a parenthetical, a full stop or colon, then the speech or
# nothing (the speech is the next paragraph).
_CUE = re.compile(
    rf"^(?P<indent>[ \t]*)(?P<name>(?:{_ABBREVIATION})?{_WORD}(?: {_WORD}){{0,3}}?)"
    r"(?: (?P<aside>\([^()]{1,60}\)))?[.:](?:[ \t]+(?P<speech>\S.*))?$"
)


def cue_layout(text: str) -> str:
    """A play with its speakers' cues on a line of their own, in capitals, over the speech.

    A name is taken for a cue when it opens at least three paragraphs of the play and, unless it
    is in capitals, is not also a word of the text in lower case ("Yes." opens paragraphs too).
    A cue standing alone as its own paragraph joins the speech after it, as a screenplay's does.
    """
    lines = text.split("\n")
    found, blank = {}, True
    for i, line in enumerate(lines):
        if blank and (m := _CUE.match(line)) and not re.fullmatch(_ABBREVIATION.strip(), m["name"] + "."):
            found[i] = m
        blank = not line.strip()
    counts = collections.Counter(m["name"] for m in found.values())
    words = set(re.findall(r"[a-z'’-]+", text))
    names = {n for n, c in counts.items() if c >= 3 and (n.isupper() or n.lower() not in words)}
    cues = {i: m for i, m in found.items() if m["name"] in names}
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = cues.get(i)
        i += 1
        if m is None:
            out.append(lines[i - 1])
            continue
        out += [m["indent"] + m["name"].upper()] + ([m["indent"] + m["aside"]] if m["aside"] else [])
        if m["speech"]:
            out.append(m["indent"] + m["speech"])
            continue
        after = next((j for j in range(i, min(i + 3, len(lines))) if lines[j].strip()), None)
        if after is not None and after not in cues:
            i = after  # the blank lines between a cue and its speech go
        else:
            out.append("")
    return "\n".join(out)


def books(out: Path, recipe: str) -> tuple[list[Path], list[Path], str]:
    """The training books and the held-back books as the run reads them; the manifest's sha256.

    Each book is checked against the manifest. With the ``unwrap`` recipe those at odd places in
    it, with ``cues`` the plays read for training (not the held-back two), are read from their
    rewritten copies in ``out/books``.
    """
    manifest = PG / "MANIFEST.tsv"
    with open(manifest, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        data = (PG / row["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            sys.exit(f"error: {row['file']} differs from MANIFEST.tsv's sha256")
    read = {r["ebook_number"]: prepared(PG / r["file"], out, rewrite(recipe, i, r)) for i, r in enumerate(rows)}
    train = [read[r["ebook_number"]] for r in rows if r["ebook_number"] not in HELD_BACK]
    held = [read[n] for n in HELD_BACK]
    return train, held, hashlib.sha256(manifest.read_bytes()).hexdigest()


def rewrite(recipe: str, place: int, row: dict[str, str]) -> Callable[[str], str] | None:
    """How the recipe rewrites the manifest's book at ``place`` before the run reads it, if at all."""
    if recipe == "unwrap" and place % 2 == 1:
        return unwrap
    if recipe == "cues" and row["kind"] == "play" and row["ebook_number"] not in HELD_BACK:
        return cue_layout
    return None


def prepared(book: Path, out: Path, rewritten: Callable[[str], str] | None) -> Path:
    """Where the run reads ``book``: itself, or its rewritten copy under ``out/books`` (made
    again each time and replaced where it differs, so a copy is always this recipe's)."""
    if rewritten is None:
        return book
    copy = out / "books" / book.name
    data = rewritten(book.read_text(encoding="utf-8")).encode("utf-8")
    if not copy.is_file() or copy.read_bytes() != data:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f".{copy.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(copy)
    return copy


def text_sha256(paths: list[Path]) -> str:
    """One digest of the text the run read, in its order: what the recipe must reproduce."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def chars_of(paths: list[Path]) -> int:
    return sum(len(p.read_text(encoding="utf-8")) for p in paths)


def train_chunk(out: Path, seconds: float | None, recipe: str) -> int:
    """One chunk of training: a fresh run, or the saved one resumed; the trainer's exit code."""
    train, held, _ = books(out, recipe)
    if (out / "last.pt").is_file():
        args = ["train", "--resume", str(out)]
    else:
        total = chars_of(train) + chars_of(held)
        # The last val_frac of the text is validation: exactly the held-back books' characters.
        args = ["train", *map(str, train + held), *FLAGS, "--val-frac", repr(chars_of(held) / total), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args])
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the trainer saves last.pt after this step and exits 143
        proc.wait()
    return proc.returncode


def held_back_bpc(state: dict, model_config: dict, vocab_state: dict, held: list[Path]) -> float:
    """Bits per character of the held-back books under these weights (computed in float32)."""
    import torch

    from charrnn.data import corpus
    from charrnn.data.vocab import from_state
    from charrnn.evaluation.bpc import evaluate
    from charrnn.model.network import CharRNN, ModelConfig

    model = CharRNN(ModelConfig.from_dict(model_config))
    model.load_state_dict(state)
    vocab = from_state(vocab_state)
    sources = corpus.open_sources([str(p) for p in held])
    try:
        ids = vocab.encode(corpus.read_text(sources))
    finally:
        corpus.release(sources)
    return evaluate(model.eval(), ids, torch.device("cpu")).bpc


# What each recipe does to the text as published, for the packaged file's metadata.
REWRITES = {
    "unwrap": "every other book's wrapped paragraphs joined into one line each",
    "cues": "the training plays' cues laid out as a screenplay's",
}


def package(out: Path, to: Path, recipe: str) -> dict:
    """Write the shipped base model from the finished run in ``out``; its metadata."""
    import torch

    from charrnn._version import __version__
    from charrnn.model import checkpoint
    from charrnn.runtime.device import cpu_model

    run = checkpoint.load(out / "last.pt")
    if run["step"] != STEPS:
        sys.exit(f"error: {out} is at step {run['step']:,} of {STEPS:,}; train on before packaging")
    train, held, manifest = books(out, recipe)
    if [Path(p).resolve() for p in run["corpus"].get("paths", [])] != [p.resolve() for p in train + held]:
        sys.exit(f"error: {out} was trained on other text than this recipe reads; train it again")
    weights = {k: v.to(torch.bfloat16) for k, v in run["state_dict"].items()}
    bpc = held_back_bpc({k: v.float() for k, v in weights.items()}, run["model_config"], run["vocab"], held)
    exact = held_back_bpc(run["state_dict"], run["model_config"], run["vocab"], held)
    read = STEPS * 32 * 100
    flag = f" --{recipe}" if recipe else ""
    meta = {
        "name": "english",
        "corpus": f"pg-english: {len(train)} public-domain Project Gutenberg books read, {len(held)} held back"
        + (f"; {REWRITES[recipe]}" if recipe else ""),
        "manifest_sha256": manifest,
        "held_back": [p.name for p in held],
        "steps": STEPS,
        "chars_read": read,
        "passes": round(read / chars_of(train), 3),
        "trained_on": f"{cpu_model()}, torch {torch.__version__}, float32, charrnn {run.get('charrnn_version')}",
        "held_back_bpc": round(bpc, 4),
        "held_back_bpc_float32": round(exact, 4),
        "stored": "bfloat16 weights, computed in float32",
        "recipe": f"python bench/pretrain.py --out checkpoints/base-english{flag}; "
        f"python bench/pretrain.py --package{flag}",
        "packaged_by": f"charrnn {__version__}",
    }
    if recipe:  # the manifest pins the books, not the copies made of them
        meta["text_sha256"] = text_sha256(train + held)
    cfg = run["train_config"]
    shipped = {
        "model_config": run["model_config"],
        "vocab": run["vocab"],
        "state_dict": weights,
        "train_config": {k: cfg[k] for k in ("model", "layers", "hidden", "embed", "seq_len", "batch_size", "lr")},
        "step": STEPS,
        "val_bpc": round(bpc, 4),
        "best_val_bpc": round(bpc, 4),
        "base": meta,
    }
    to.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(shipped, to)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/base-english"))
    parser.add_argument("--chunk", help="stop (resumably) after this long, e.g. 2h (default: run to the end)")
    parser.add_argument("--package", action="store_true", help="write the shipped model from the finished run")
    candidate = parser.add_mutually_exclusive_group()
    candidate.add_argument("--cues", action="store_true", help="the shipped base: the plays' cues as in a script")
    candidate.add_argument("--unwrap", action="store_true", help="the candidate that reads every other book unwrapped")
    parser.add_argument(
        "--to", type=Path, default=Path(__file__).resolve().parents[1] / "charrnn" / "base" / "english.pt"
    )
    a = parser.parse_args()
    recipe = "unwrap" if a.unwrap else "cues" if a.cues else ""
    if a.package:
        meta = package(a.out, a.to, recipe)
        print(json.dumps({"bench": "pretrain", "packaged": str(a.to), "bytes": a.to.stat().st_size, **meta}))
        return
    from charrnn.training.config import parse_duration

    seconds = parse_duration(a.chunk) if a.chunk else None
    start = time.monotonic()
    code = train_chunk(a.out, seconds, recipe)
    state = "chunk" if code == 128 + signal.SIGTERM else "done" if code == 0 else "failed"
    took = round(time.monotonic() - start, 1)
    print(json.dumps({"bench": "pretrain", "out": str(a.out), "state": state, "exit": code, "seconds": took}))
    sys.exit(0 if state != "failed" else 1)


if __name__ == "__main__":
    main()
