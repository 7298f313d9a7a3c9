"""charrnn: train character/subword recurrent language models on any text and sample from them.

The Python API (see docs/python-api.md)::

    import charrnn
    run = charrnn.train("play.txt", steps=300)
    model = charrnn.load(run.dir)
    print(model.generate("ANNA:", length=200, seed=1))

``import charrnn`` stays light: torch is imported on first use of ``train``, ``load`` or the
classes, so scripts (and ``charrnn --help``) that never train start at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charrnn._version import __version__
from charrnn.errors import CharrnnError

__all__ = ["CharrnnError", "Model", "Run", "Score", "__version__", "load", "train"]

if TYPE_CHECKING:
    from charrnn.api import Model, Run, Score, load, train


def __getattr__(name: str) -> Any:
    if name in ("Model", "Run", "Score", "load", "train"):
        from charrnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'charrnn' has no attribute {name!r}")
