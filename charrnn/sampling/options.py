"""What a sample is asked for: length, temperature, top-k/top-p, seed, stop strings, precision.

One set of options for ``charrnn sample``, the Python API's ``generate`` and the server's
requests; ``check`` holds the rules every caller validates with.
Each field declares how it is offered as a flag (``charrnn.options``); nothing here imports torch,
since the command line reads these tables to show ``--help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import CharrnnError
from charrnn.options import Option, command_options, option, options_of

# A logit would have to pass 3.4e8 to overflow float32 when divided by a temperature this small.
GREEDY_BELOW = 1e-30


@dataclass
class SampleOptions:
    length: int = option(1000, "Characters to generate per sample.", min=0, max=10**9)
    temp: float = option(0.8, "Temperature (> 0): lower is safer, higher is wilder.")
    greedy: bool = option(False, "Always take the most likely token.", flags=("--greedy",))
    top_k: int | None = option(None, "Sample only from the K most likely tokens.")
    top_p: float | None = option(None, "Nucleus sampling: the smallest set with probability >= P (0 < P <= 1).")
    seed: int | None = option(None, "Seed for a reproducible sample.", min=0, max=2**63 - 1)
    stops: list[str] = option([], "End a sample at this string (repeatable; \\n allowed).", flags=("--stop",))
    keep_stop: bool = option(False, "Keep the stop string in the output.", flags=("--keep-stop",))
    precision: str = option(
        "auto",
        "auto (the fastest this machine measured for this model: float32 unless bfloat16 or int8 steps "
        ">= 1.1x as fast and keeps the model's predictions) | float32 | bfloat16 | int8: the weights of each step. "
        "Seeded text is the same for the same precision; float32's is the reference.",
        choices=("auto", "float32", "bfloat16", "int8"),
    )

    @property
    def picks_greedily(self) -> bool:
        """Greedy, or a temperature below ``GREEDY_BELOW``: dividing the logits by it could
        overflow float32 (inf - inf is NaN in the softmax, and every pick was token 0), and
        the distribution it asks for is already the argmax's."""
        return self.greedy or self.temp < GREEDY_BELOW

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
        precisions = SAMPLE_OPTIONS["precision"].choices
        if self.precision not in precisions:
            raise CharrnnError(f"--precision must be one of {', '.join(precisions)} (got {self.precision!r})")


# ``charrnn sample``'s options that are no field of SampleOptions: what to continue, how many
# samples and how to write them, and adapting the model first.
_RUN_OPTIONS = {
    "checkpoint_path": Option(
        "Checkpoint file or run directory (default: the newest run under ./checkpoints).",
        type=Path,
        argument=True,
        metavar="[CHECKPOINT]",
    ),
    "prime": Option("Text the sample continues (printed first).", type=str),
    "prime_file": Option("Read the prime text from a file.", type=Path),
    "unknown": Option(
        "Prime characters outside the vocabulary: error | skip.", type=str, default="error", choices=("error", "skip")
    ),
    "num_samples": Option("Samples generated together as one batch.", type=int, default=1, min=1, max=4096),
    "separator": Option("Written between samples (\\n allowed).", type=str, default="\\n\\n"),
    "as_json": Option("One JSON line per sample.", type=bool, default=False, flags=("--json",)),
    "beam_width": Option("Beam search for the most likely continuation.", type=int, min=1, max=1024),
    "fmt": Option(
        "text (streamed; default) | fountain (cleaned into valid Fountain) | html | pdf | fdx (typeset "
        "screenplay; needs pip install 'charrnn[screenplay]'). Default: from -o's suffix, else text.",
        type=str,
        flags=("--format",),
        choices=("text", "fountain", "html", "pdf", "fdx"),
    ),
    "output": Option(
        "Write to this file (atomically) instead of stdout; pdf needs it when stdout is a terminal.",
        type=Path,
        flags=("--output", "-o"),
    ),
    "title": Option("Title for the screenplay's title page (a format other than text).", type=str),
    "author": Option("Author for the title page.", type=str),
    "adapt": Option(
        "First adapt a copy of the model to this text (repeatable; - for stdin); without --prime the "
        "sample continues its last line.",
        type=list[str],
        default=[],
    ),
    "adapt_steps": Option("At most this many update steps of --adapt (default 300, over at most 3 passes).", type=int),
    "save_adapted": Option("Also write the adapted model to this checkpoint file.", type=Path),
}
# Every option of ``charrnn sample``, in the order its --help lists them.
SAMPLE_OPTIONS = command_options(
    (
        "checkpoint_path",
        "length",
        "temp",
        "greedy",
        "top_k",
        "top_p",
        "seed",
        "prime",
        "prime_file",
        "unknown",
        "stops",
        "keep_stop",
        "num_samples",
        "separator",
        "as_json",
        "beam_width",
        "fmt",
        "output",
        "title",
        "author",
        "adapt",
        "adapt_steps",
        "save_adapted",
        "precision",
    ),
    options_of(SampleOptions, defaults=True),
    _RUN_OPTIONS,
)
