"""Recurrent cells of our own beside ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``: peephole LSTM and CIFG.

Each cell is written once, as a step function taken straight from its equations. A layer runs
that step in a loop over time, but first computes the input projections of the whole window in
one matrix product (``x (T, B, in) @ W_ih^T``), so only the recurrent product ``h @ W_hh^T`` and
the element-wise gate arithmetic remain inside the per-step loop. ``W·[h, x]`` in the equations
is split as ``W_hh h + W_ih x``.

The loops run eagerly. TorchScript (``torch.jit.script`` of the loop, which compiles the step
in) was measured against eager on a 2-core CPU, 2x512 layer, batch 64, seq 100, forward +
backward, after the profiling executor's two warm-up calls: peephole 8.3 s vs 8.6 s per step,
CIFG 6.8 s vs 6.9 s (one thread: 13.4 vs 14.9 s and 11.0 vs 10.8 s), a gain within the noise
of a shared machine. And its autodiff is wrong here: when some gate chunk gets no gradient
(e.g. a loss on the final ``c`` alone) the backward of ``chunk`` drops that piece and fails
with a shape error, so ``gradcheck`` fails scripted and passes eager. ``torch.jit`` is also
deprecated (PyTorch 2.13 warns). At this size the time goes into the matrix products, not
Python's per-operation overhead, which is all scripting could save.

The stacked modules take and return the state as ``(h, c)``, each (layers, batch, hidden), and
read batch-first input, exactly like the model's ``nn.LSTM(batch_first=True)``, so state
handling elsewhere (detaching, selecting rows, checkpoints, sampling) treats them like an LSTM.

The module also holds reference (textbook, unfused, per-gate) LSTM and GRU steps and the mapping
from PyTorch's fused weight layout to per-gate matrices: the tests use them to check that
``nn.LSTM`` / ``nn.GRU`` compute the equations the README states, gate by gate.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charrnn.errors import CharrnnError

# ---------------------------------------------------------------------------------------------
# Step functions and sequence loops
# ---------------------------------------------------------------------------------------------


def peephole_step(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, peep: Tensor) -> tuple[Tensor, Tensor]:
    """One peephole-LSTM step (Gers & Schmidhuber 2000); returns the new ``(h, c)``.

    ``gx`` is the input part of the pre-activations, ``x W_ih^T + b`` (batch, 4H) in gate order
    i, f, g (candidate), o; ``w_hh`` is (4H, H); ``peep`` holds the diagonal peepholes
    ``p_i, p_f, p_o`` (3H). The input and forget gates look at the old cell ``C_{t-1}``, the
    output gate at the new cell ``C_t``:

        i = σ(W_i·[h, x] + p_i ⊙ C_{t-1} + b_i)      f = σ(W_f·[h, x] + p_f ⊙ C_{t-1} + b_f)
        C = f ⊙ C_{t-1} + i ⊙ tanh(W_c·[h, x] + b_c)
        o = σ(W_o·[h, x] + p_o ⊙ C + b_o)             h = o ⊙ tanh(C)
    """
    g = torch.addmm(gx, h, w_hh.t())
    gi, gf, gc, go = g.chunk(4, 1)
    p_i, p_f, p_o = peep.chunk(3)
    i = torch.sigmoid(gi + p_i * c)
    f = torch.sigmoid(gf + p_f * c)
    c = f * c + i * torch.tanh(gc)
    o = torch.sigmoid(go + p_o * c)
    return o * torch.tanh(c), c


def cifg_step(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor]:
    """One CIFG step (coupled input-forget gate LSTM); returns the new ``(h, c)``.

    ``gx`` is ``x W_ih^T + b`` (batch, 3H) in gate order f, g (candidate), o; ``w_hh`` is
    (3H, H). There is no input gate: what the cell forgets is exactly what it lets in, which
    saves a quarter of the LSTM's gate parameters:

        f = σ(W_f·[h, x] + b_f)      C = f ⊙ C_{t-1} + (1 − f) ⊙ tanh(W_c·[h, x] + b_c)
        o = σ(W_o·[h, x] + b_o)      h = o ⊙ tanh(C)
    """
    g = torch.addmm(gx, h, w_hh.t())
    gf, gc, go = g.chunk(3, 1)
    f = torch.sigmoid(gf)
    cand = torch.tanh(gc)
    c = cand + f * (c - cand)
    return torch.sigmoid(go) * torch.tanh(c), c


def peephole_sequence(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, peep: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``peephole_step`` over every time step of ``gx`` (T, batch, 4H): outputs (T, batch, H), h, c."""
    outs: list[Tensor] = []
    for t in range(gx.size(0)):
        h, c = peephole_step(gx[t], h, c, w_hh, peep)
        outs.append(h)
    return torch.stack(outs), h, c


def cifg_sequence(gx: Tensor, h: Tensor, c: Tensor, w_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``cifg_step`` over every time step of ``gx`` (T, batch, 3H): outputs (T, batch, H), h, c."""
    outs: list[Tensor] = []
    for t in range(gx.size(0)):
        h, c = cifg_step(gx[t], h, c, w_hh)
        outs.append(h)
    return torch.stack(outs), h, c


# ---------------------------------------------------------------------------------------------
# Stacked layers
# ---------------------------------------------------------------------------------------------


class _StackedCell(nn.Module):
    """Stacked layers of one custom cell, batch-first, with dropout between layers.

    Parameters per layer ``l``, named like ``nn.LSTM``'s: ``weight_ih_l{l}`` (G·H, in),
    ``weight_hh_l{l}`` (G·H, H) and one bias ``bias_l{l}`` (G·H) for the G gates (a second
    bias, as PyTorch keeps for cuDNN compatibility, would add nothing but parameters).

    Initialisation (``reset_parameters``):
      - input weights U(−1/√H, 1/√H), PyTorch's default for its own recurrent layers, so a
        custom cell starts at the same input scale as ``nn.LSTM``;
      - recurrent weights orthogonal, one H×H block per gate: repeated multiplication by the
        recurrent matrix then neither grows nor shrinks the state early in training;
      - biases 0 except the forget gate's, 1 (Jozefowicz et al. 2015): the cell keeps its
        memory by default until it has learnt what to forget.
    """

    gates: int  # gates per cell (rows of the weights in units of H)
    forget_gate: int  # the forget gate's position in the gate order
    extra_vectors: int = 0  # vectors of H per layer beyond the weights and bias (model.size_in_parameters)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        G, H = self.gates, hidden_size
        for layer in range(num_layers):
            inp = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(G * H, inp)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(G * H, H)))
            self.register_parameter(f"bias_l{layer}", nn.Parameter(torch.empty(G * H)))
        self._add_extra_parameters()
        self.reset_parameters()

    def _add_extra_parameters(self) -> None:
        """Cell-specific parameters beyond the weights and bias (none by default)."""

    def reset_parameters(self) -> None:
        """The initialisation in the class docstring (also what a fresh module starts with)."""
        H = self.hidden_size
        bound = 1.0 / math.sqrt(H)
        with torch.no_grad():
            for layer in range(self.num_layers):
                nn.init.uniform_(getattr(self, f"weight_ih_l{layer}"), -bound, bound)
                w_hh = getattr(self, f"weight_hh_l{layer}")
                for k in range(self.gates):
                    nn.init.orthogonal_(w_hh[k * H : (k + 1) * H])
                bias = getattr(self, f"bias_l{layer}")
                bias.zero_()
                f = self.forget_gate
                bias[f * H : (f + 1) * H].fill_(1.0)

    def _layer(self, layer: int, gx: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Layer ``layer`` over a window whose input projections are ``gx``: outputs, h, c."""
        raise NotImplementedError

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Outputs (batch, time, H) of the top layer and the final ``(h, c)``, each (layers, batch, H)."""
        B = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size)
            state = (zeros, zeros)
        elif not isinstance(state, tuple) or len(state) != 2:
            # A bare tensor would silently unpack along the layer axis; say what is wrong instead.
            raise CharrnnError(f"{type(self).__name__} needs its state as a tuple (h, c), got {type(state).__name__}")
        h0, c0 = state
        seq = x.transpose(0, 1)  # time-major, so each step's slice of the projections is contiguous
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                seq = F.dropout(seq, self.dropout, self.training)
            gx = F.linear(seq, getattr(self, f"weight_ih_l{layer}"), getattr(self, f"bias_l{layer}"))
            seq, h, c = self._layer(layer, gx, h0[layer], c0[layer])
            hs.append(h)
            cs.append(c)
        return seq.transpose(0, 1), (torch.stack(hs), torch.stack(cs))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, dropout={self.dropout}"


class PeepholeLSTM(_StackedCell):
    """Stacked peephole LSTM (see ``peephole_step``); gate order i, f, g, o as in ``nn.LSTM``.

    Beyond the common parameters each layer has ``peephole_l{l}`` (3H: p_i, p_f, p_o), the
    diagonal peephole weights, initialised to 0 so the cell starts as a plain LSTM and learns
    how much to look at its own cell state. They are vectors, so the optimiser treats them like
    biases (no weight decay).
    """

    gates = 4
    forget_gate = 1
    extra_vectors = 3

    def _add_extra_parameters(self) -> None:
        for layer in range(self.num_layers):
            self.register_parameter(
                f"peephole_l{layer}", nn.Parameter(torch.empty(self.extra_vectors * self.hidden_size))
            )

    def reset_parameters(self) -> None:
        """The common initialisation, and peepholes 0."""
        super().reset_parameters()
        with torch.no_grad():
            for layer in range(self.num_layers):
                getattr(self, f"peephole_l{layer}").zero_()

    def _layer(self, layer: int, gx: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return peephole_sequence(gx, h, c, getattr(self, f"weight_hh_l{layer}"), getattr(self, f"peephole_l{layer}"))


class CIFGLSTM(_StackedCell):
    """Stacked coupled input-forget gate LSTM (see ``cifg_step``); gate order f, g, o.

    The forget-gate bias 1 also sets the coupled input gate 1 − f to about 0.27 at the start.
    """

    gates = 3
    forget_gate = 0

    def _layer(self, layer: int, gx: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return cifg_sequence(gx, h, c, getattr(self, f"weight_hh_l{layer}"))


CUSTOM_CELLS: dict[str, type[_StackedCell]] = {"peephole": PeepholeLSTM, "cifg": CIFGLSTM}


# ---------------------------------------------------------------------------------------------
# Textbook references for PyTorch's fused cells
# ---------------------------------------------------------------------------------------------


def _gate_rows(w: Tensor, k: int, H: int) -> Tensor:
    return w[k * H : (k + 1) * H]


def _torch_layer(rnn: nn.RNNBase, layer: int) -> dict[str, Tensor]:
    return {n: getattr(rnn, f"{n}_l{layer}").detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def _joined_gates(p: dict[str, Tensor], names: str, H: int) -> dict[str, Tensor]:
    """Gate ``k`` (named ``names[k]``) on ``[h, x]``: ``W = [W_hk | W_ik]``, ``b = b_ik + b_hk``."""
    out = {}
    for k, name in enumerate(names):
        out[f"W_{name}"] = torch.cat([_gate_rows(p["weight_hh"], k, H), _gate_rows(p["weight_ih"], k, H)], 1)
        out[f"b_{name}"] = _gate_rows(p["bias_ih"], k, H) + _gate_rows(p["bias_hh"], k, H)
    return out


def lstm_weights_from_torch(rnn: nn.LSTM, layer: int) -> dict[str, Tensor]:
    """Per-gate textbook weights of one ``nn.LSTM`` layer.

    PyTorch stacks the gates' rows as i, f, g, o in ``weight_ih``/``weight_hh`` and keeps two
    biases; the textbook gate ``k`` acts on ``[h, x]`` with ``W_k = [W_hk | W_ik]`` and
    ``b_k = b_ik + b_hk``. Returns ``W_i, b_i, W_f, b_f, W_g, b_g, W_o, b_o``.
    """
    return _joined_gates(_torch_layer(rnn, layer), "ifgo", rnn.hidden_size)


def gru_weights_from_torch(rnn: nn.GRU, layer: int) -> dict[str, Tensor]:
    """Per-gate textbook weights of one ``nn.GRU`` layer (rows stacked r, z, n in PyTorch).

    The reset and update gates act on ``[h, x]`` like the LSTM's gates. The candidate keeps its
    input and recurrent parts apart (``W_in, b_in, W_hn, b_hn``) because PyTorch applies the
    reset gate after the recurrent product, so ``b_hn`` cannot be merged into ``b_in``.
    """
    H = rnn.hidden_size
    p = _torch_layer(rnn, layer)
    out = _joined_gates(p, "rz", H)
    out["W_in"], out["b_in"] = _gate_rows(p["weight_ih"], 2, H), _gate_rows(p["bias_ih"], 2, H)
    out["W_hn"], out["b_hn"] = _gate_rows(p["weight_hh"], 2, H), _gate_rows(p["bias_hh"], 2, H)
    return out


def reference_lstm_step(
    x: Tensor, h: Tensor, c: Tensor, w: dict[str, Tensor]
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The textbook LSTM step, one gate at a time; returns ``h, c`` and the gates ``i, f, g, o``.

    i = σ(W_i·[h, x] + b_i)   f = σ(W_f·[h, x] + b_f)   g = tanh(W_g·[h, x] + b_g)
    o = σ(W_o·[h, x] + b_o)   C = f ⊙ C_{t-1} + i ⊙ g   h = o ⊙ tanh(C)
    """
    hx = torch.cat([h, x], -1)

    def pre(k: str) -> Tensor:
        return hx @ w[f"W_{k}"].T + w[f"b_{k}"]

    gates = {
        "i": torch.sigmoid(pre("i")),
        "f": torch.sigmoid(pre("f")),
        "g": torch.tanh(pre("g")),
        "o": torch.sigmoid(pre("o")),
    }
    c = gates["f"] * c + gates["i"] * gates["g"]
    return gates["o"] * torch.tanh(c), c, gates


def reference_gru_step(x: Tensor, h: Tensor, w: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRU step as PyTorch defines it, one gate at a time; returns ``h`` and the gates ``r, z, n``.

        r = σ(W_r·[h, x] + b_r)   z = σ(W_z·[h, x] + b_z)
        n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))   h = (1 − z) ⊙ n + z ⊙ h_{t-1}

    The reset gate multiplies the recurrent product (Cho et al. 2014 apply it before:
    ``W_hn (r ⊙ h)``); with r = 0 the candidate therefore also drops ``b_hn``.
    """
    hx = torch.cat([h, x], -1)
    r = torch.sigmoid(hx @ w["W_r"].T + w["b_r"])
    z = torch.sigmoid(hx @ w["W_z"].T + w["b_z"])
    n = torch.tanh(x @ w["W_in"].T + w["b_in"] + r * (h @ w["W_hn"].T + w["b_hn"]))
    return (1 - z) * n + z * h, {"r": r, "z": z, "n": n}
