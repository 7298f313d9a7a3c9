"""Checkpoint files: written atomically, read without ever unpickling arbitrary objects.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved with
``torch.save`` and read with ``torch.load(weights_only=True)``: a file crafted to run code on
load is refused by the restricted unpickler before anything executes.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from charrnn.errors import CharrnnError
from charrnn.runtime.files import write_atomic

FORMAT = "charrnn"
VERSION = 1
RUN_FILES = ("best.pt", "last.pt")
# The name that stands for the English base model shipped in the package (where no file or
# directory of that name exists): ``charrnn info base``, ``charrnn sample base``, ``load("base")``.
BASE = "base"


def save(obj: dict[str, Any], path: Path) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``.

    The rename is atomic, so at every instant ``path`` is either the previous complete
    checkpoint or the new complete one, never a torn file. The charrnn version that wrote it is
    kept beside the format version, for ``charrnn info`` and for telling old runs apart.
    """
    from charrnn._version import __version__

    stamped = {"format": FORMAT, "version": VERSION, **obj, "charrnn_version": __version__}
    write_atomic(Path(path), lambda f: torch.save(stamped, f), "checkpoint")


def copy(src: Path, dst: Path) -> None:
    """Copy a checkpoint file over ``dst`` as atomically as ``save`` writes one."""
    with open(src, "rb") as source:
        write_atomic(Path(dst), lambda f: shutil.copyfileobj(source, f), "checkpoint")


def bundled_base() -> Path:
    """The English base model in the installed package (charrnn/base/english.pt)."""
    from importlib.resources import files

    return Path(str(files("charrnn") / "base" / "english.pt"))


def resolve(path: str | Path) -> Path:
    """A checkpoint file, a run directory's best.pt (falling back to last.pt), or for ``base``
    (unless a file or directory has that name) the bundled English base model."""
    p = Path(path)
    if str(path) == BASE and not p.exists():
        if not bundled_base().is_file():
            raise CharrnnError(f"this installation lacks the bundled base model ({bundled_base()})")
        return bundled_base()
    if p.is_dir():
        for name in RUN_FILES:
            if (p / name).is_file():
                return p / name
        raise CharrnnError(f"{p}: run directory holds no best.pt or last.pt")
    if not p.exists():
        raise CharrnnError(f"{p}: no such checkpoint")
    return p


def latest_run(root: Path = Path("checkpoints")) -> Path:
    """The most recently written checkpoint under ``root`` (its run's best.pt)."""
    found = [f for name in RUN_FILES for f in root.glob(f"*/{name}")] if root.is_dir() else []
    if not found:
        raise CharrnnError(f"no trained model found under ./{root}; train one first with: charrnn train CORPUS.txt")
    newest_dir = max(found, key=lambda f: f.stat().st_mtime).parent
    return resolve(newest_dir)


def default_model(root: Path = Path("checkpoints")) -> tuple[Path, str | None]:
    """The model a command uses when none is named: the newest run under ``root``, else the
    bundled base model, with a note saying so (a new user sees English before training)."""
    try:
        return latest_run(root), None
    except CharrnnError:
        if not bundled_base().is_file():
            raise
    note = (
        f"note: no trained model under ./{root}; using the bundled English base model "
        "(train your own with: charrnn train FILE)"
    )
    return bundled_base(), note


def load(path: str | Path) -> dict[str, Any]:
    """Load and check a charrnn checkpoint; every failure is a one-line ``CharrnnError``."""
    p = resolve(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():
            raise CharrnnError(
                f"{p}: refused: the file holds objects other than tensors and plain data "
                "(it could run code if loaded); not a charrnn checkpoint"
            ) from None
        raise CharrnnError(f"{p}: corrupt or not a checkpoint (not a PyTorch file)") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse a file means it is not a usable checkpoint
        raise CharrnnError(f"{p}: corrupt, truncated or not a checkpoint ({_short(e)})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CharrnnError(f"{p}: not a charrnn checkpoint (made by another tool?)")
    version = obj.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CharrnnError(
            f"{p}: checkpoint format version {version!r} is newer than this charrnn understands "
            f"({VERSION}); upgrade charrnn"
        )
    for key in ("model_config", "vocab", "state_dict"):
        if key not in obj:
            raise CharrnnError(f"{p}: checkpoint is missing {key!r}")
    obj["path"] = str(p)
    return obj


def _short(e: BaseException) -> str:
    text = str(e).strip()
    if not text:
        return type(e).__name__
    return text.splitlines()[0].split(". ")[0][:120]


def build_model(ckpt: dict[str, Any]):
    """The model and vocabulary stored in a loaded checkpoint, weights in place."""
    from charrnn.data.vocab import from_state
    from charrnn.model.network import CharRNN, ModelConfig

    vocab = from_state(ckpt["vocab"])
    cfg = ModelConfig.from_dict(ckpt["model_config"])
    model = CharRNN(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise CharrnnError(f"{ckpt['path']}: weights do not match the model config ({_short(e)})") from None
    model.eval()
    return model, vocab


def describe(ckpt: dict[str, Any]) -> list[tuple[str, str]]:
    """``charrnn info``'s rows: what a checkpoint holds, how long it trained and how well."""
    from charrnn.data.vocab import describe_chars
    from charrnn.model.network import count_parameters

    model, vocab = build_model(ckpt)
    cfg = model.cfg
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [
        ("checkpoint", ckpt["path"]),
        (
            "model",
            f"{cfg.model} {cfg.layers}x{cfg.hidden}, embed {cfg.embed}, dropout {cfg.dropout}, "
            f"weight drop {cfg.weight_drop}, tied {cfg.tie}",
        ),
        ("parameters", f"{count_parameters(model):,}"),
        ("vocabulary", f"{vocab.kind}, {vocab.size} tokens"),
        ("steps", f"{ckpt.get('step', 0):,}"),
        ("val bpc", fmt(ckpt.get("val_bpc"))),
        ("best val bpc", fmt(ckpt.get("best_val_bpc"))),
        # A packaged base keeps no time: its file is byte for byte the same whenever it is made.
        ("trained for", f"{ckpt['elapsed']:.1f} s" if "elapsed" in ckpt else "-"),
        ("written by", f"charrnn {ckpt['charrnn_version']}" if ckpt.get("charrnn_version") else "-"),
    ]
    if vocab.kind == "char":
        rows.append(("characters", describe_chars(list(vocab.chars), limit=200)))
    else:
        rows.append(("tokenizer", f"SentencePiece {vocab.kind}, byte fallback, whitespace kept"))
    return rows + _base_rows(ckpt.get("base"))


def _base_rows(base: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What a base model was pretrained on, how, and how well (the bundled model's metadata)."""
    if not base:
        return []
    return [
        ("base model", f"{base['name']}: {base['corpus']}"),
        ("corpus sha256", f"{base['manifest_sha256']} (MANIFEST.tsv)"),
        *([("text sha256", f"{base['text_sha256']} (the text as read)")] if "text_sha256" in base else []),
        ("held back", ", ".join(base["held_back"])),
        ("pretraining", f"{base['steps']:,} steps, {base['chars_read']:,} characters read ({base['passes']} passes)"),
        ("trained on", base["trained_on"]),
        (
            "held-back bpc",
            f"{base['held_back_bpc']:.4f} ({base['stored']}; float32 weights {base['held_back_bpc_float32']:.4f})",
        ),
        ("recipe", base["recipe"]),
    ]
