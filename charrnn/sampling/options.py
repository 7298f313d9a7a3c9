"""What a sample is asked for: length, temperature, top-k/top-p, seed, stop strings, precision.

One set of options for ``charrnn sample``, the Python API's ``generate`` and the server's
requests; ``check`` holds the rules every caller validates with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from charrnn.errors import CharrnnError
from charrnn.runtime.precision import STEP_PRECISIONS


@dataclass
class SampleOptions:
    length: int = 1000
    temp: float = 0.8
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    keep_stop: bool = False
    precision: str = "auto"

    def check(self) -> None:
        if self.length < 0:
            raise CharrnnError(f"--length must be >= 0 (got {self.length})")
        if not self.greedy and not self.temp > 0:
            raise CharrnnError(f"--temp must be > 0 (got {self.temp})")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if any(s == "" for s in self.stops):
            raise CharrnnError("--stop must not be empty")
        if self.precision not in STEP_PRECISIONS:
            raise CharrnnError(f"--precision must be one of {', '.join(STEP_PRECISIONS)} (got {self.precision!r})")
