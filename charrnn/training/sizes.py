"""The sizes auto chooses among: a ladder of models, each with the training settings measured for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """One rung of the ladder, with the training settings measured for models of its size."""

    layers: int
    hidden: int
    embed: int
    seq_len: int
    batch_size: int
    lr: float
    weight_decay: float
    # Too slow for a CPU (a 2-core CPU takes ~25 s per step of the 3x1024 model): only for GPUs.
    gpu_only: bool = False
    cell: str = "lstm"

    @property
    def name(self) -> str:
        return f"{self.layers}x{self.hidden}"

    def params(self, vocab: int) -> int:
        """Parameters of the model with this size and ``vocab`` tokens."""
        from charrnn.model.network import size_in_parameters

        return size_in_parameters(vocab, self.layers, self.hidden, self.embed, self.cell)


# From the presets (tiny = 2x256, small = 2x512, medium = 3x640, large = 3x1024) with sizes
# between them; each rung keeps the batch, window and learning rate of the preset nearest it.
LADDER = (
    Size(2, 128, 128, 64, 32, 1e-2, 0.01),
    Size(2, 256, 128, 64, 32, 1e-2, 0.01),
    Size(2, 384, 128, 100, 32, 1e-2, 0.1),
    Size(2, 512, 128, 100, 32, 1e-2, 0.1),
    Size(3, 640, 128, 100, 32, 6e-3, 0.1),
    Size(3, 1024, 256, 200, 128, 4e-3, 0.1, gpu_only=True),
)
