"""The language model: embedding -> stacked recurrent layers -> dropout -> linear head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from charrnn.errors import CharrnnError
from charrnn.model.cells import CUSTOM_CELLS

CELLS = ("lstm", "gru", "rnn", "peephole", "cifg")
# Cells whose state is the pair (h, c) rather than h alone.
LSTM_FAMILY = ("lstm", "peephole", "cifg")
# Weight matrices (gates) per layer of each cell; the custom cells say their own.
GATES = {"lstm": 4, "gru": 3, "rnn": 1, **{name: cell.gates for name, cell in CUSTOM_CELLS.items()}}


def check_cell(name: str) -> str:
    """``name`` if it is a cell charrnn builds: sizing a model (auto, the memory check) comes
    before building it, and an unknown name must fail the same way there."""
    if name not in CELLS:
        raise CharrnnError(f"unknown model {name!r}; choose one of {', '.join(CELLS)}")
    return name


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    model: str = "lstm"
    layers: int = 2
    hidden: int = 512
    embed: int = 512
    dropout: float = 0.2
    tie: bool = False
    weight_drop: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise CharrnnError(f"checkpoint model config has unknown fields {sorted(unknown)}")
        return cls(**d)


State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class CharRNN(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        check_cell(cfg.model)
        if cfg.tie and cfg.embed != cfg.hidden:
            raise CharrnnError(f"--tie needs --embed equal to --hidden (got {cfg.embed} and {cfg.hidden})")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        between = cfg.dropout if cfg.layers > 1 else 0.0
        if cfg.model in CUSTOM_CELLS:
            # Our own cells (charrnn.model.cells): batch-first, (h, c) state, initialised by themselves.
            self.rnn = CUSTOM_CELLS[cfg.model](cfg.embed, cfg.hidden, num_layers=cfg.layers, dropout=between)
        else:
            rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.model]
            self.rnn = rnn_cls(cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=between)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)
        if cfg.tie:
            self.head.weight = self.embed.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # Forget-gate bias 1 (Jozefowicz et al. 2015): the cell remembers by default early in
        # training, which speeds up learning long-range structure such as open quotes.
        if self.cfg.model == "lstm":
            h = self.cfg.hidden
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_hh"):
                    with torch.no_grad():
                        p[h : 2 * h].fill_(1.0)
                elif name.startswith("bias_ih"):
                    with torch.no_grad():
                        p[h : 2 * h].zero_()

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits for every position of ``x`` (batch, time) and the state after the last one."""
        inputs = self.embed(x)
        if self.training and self.cfg.weight_drop > 0:
            out, state = functional_call(self.rnn, self._dropped_recurrent_weights(), (inputs, state))
        else:
            out, state = self.rnn(inputs, state)
        return self.head(self.drop(out)), state

    def _dropped_recurrent_weights(self) -> dict[str, torch.Tensor]:
        """DropConnect on the hidden-to-hidden matrices (Merity et al. 2017, AWD-LSTM).

        One mask per matrix per window, shared by every time step and row: it regularises the
        recurrence itself, which dropout on activations cannot reach without giving up the fused
        LSTM kernel, and it costs one elementwise pass over each matrix per step.
        """
        return {
            name: F.dropout(p, self.cfg.weight_drop)
            for name, p in self.rnn.named_parameters()
            if name.startswith("weight_hh")
        }

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> State:
        z = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device)
        return (z, z.clone()) if self.cfg.model in LSTM_FAMILY else z


def state_tensors(state: State) -> list[torch.Tensor]:
    """A state's tensors, (h, c) or (h,): the one place that knows a state is a pair or one tensor."""
    return list(state) if isinstance(state, tuple) else [state]


def as_state(tensors: Sequence[torch.Tensor]) -> State:
    """``state_tensors`` undone."""
    return (tensors[0], tensors[1]) if len(tensors) == 2 else tensors[0]


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """``fn`` applied to each of a state's tensors."""
    return as_state([fn(s) for s in state_tensors(state)])


def join_states(states: Sequence[State]) -> State:
    """Several batches' states as one, rows (dimension 1) in order."""
    return as_state([torch.cat(parts, 1) for parts in zip(*map(state_tensors, states))])


def detach_state(state: State) -> State:
    """Cut the graph at a window boundary (truncated BPTT) while keeping the values, in float32
    whatever precision the window ran in, so checkpoints and the next window see one dtype."""
    return map_state(lambda s: s.detach().float(), state)


def select_state(state: State, index: torch.Tensor | slice) -> State:
    """The state of some rows of the batch (dimension 1), contiguous: cuDNN refuses a strided hx."""
    return map_state(lambda s: s[:, index].contiguous(), state)


def size_in_parameters(vocab: int, layers: int, hidden: int, embed: int, cell: str = "lstm") -> int:
    """Parameters of a model of this shape before it is built (embedding, layers, head): what
    auto sizes by and the memory check budgets for, so it counts each cell's own vectors (two
    biases per layer for PyTorch's cells; one for ours, with their extra vectors)."""
    h, g = hidden, GATES[check_cell(cell)]
    custom = CUSTOM_CELLS.get(cell)
    vectors = g * h * 2 if custom is None else g * h + custom.extra_vectors * h
    recurrent = g * h * (embed + h) + (layers - 1) * g * h * 2 * h + layers * vectors
    return vocab * embed + recurrent + h * vocab + vocab


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
