"""The model's recurrence one token at a time, with its weights laid out once, for generation.

``nn.LSTM`` called once per character re-packs its weights on every call; the ``Stepper``
instead keeps pre-transposed, gate-fused matrices with pre-summed biases, and folds the first
layer's input product into a lookup table (embedding x input weights), so each character costs
one matrix-vector product per weight matrix and a handful of element-wise operations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch

from charrnn.model.cells import CUSTOM_CELLS, cifg_step, peephole_step
from charrnn.model.network import CharRNN, State
from charrnn.runtime.kernels import int8_product, pack_bfloat16, pack_int8, packed_product
from charrnn.runtime.precision import step_dtype

# A step's matrix: float32, bfloat16 in oneDNN's layout, or int8 packed by fbgemm.
Matrix = torch.Tensor | torch.ScriptObject


class Stepper:
    """The model's own recurrence, one token at a time, for generation (no dropout).

    The custom cells (peephole, cifg) run the very step functions their layers loop over in
    training, fed from the same token table, so sampling cannot drift from the trained model.

    ``precision`` (see ``charrnn.runtime.precision.step_dtype``; ``auto`` is resolved before, by
    ``charrnn.sampling.precision``) is the dtype of the recurrent matrices: with bfloat16 each of
    their products reads half the bytes, with int8 (one scale per output column) a quarter; either
    accumulates in float32 or int32 and joins its float32 bias, so the state, the gate arithmetic
    and the logits stay float32. The first layer's token table (a step reads one row) and the small
    output layer stay float32.
    """

    def __init__(self, model: CharRNN, precision: str = "float32") -> None:
        cfg = model.cfg
        self.kind = cfg.model
        self.layers = cfg.layers
        self.hidden = cfg.hidden
        self.dtype = step_dtype(precision, cfg.model)
        rnn = model.rnn
        with torch.no_grad():
            # LSTM gate rows reordered i, f, g, o -> i, f, o, g: one sigmoid over the first
            # three gates and one tanh per step instead of four calls. Each matrix's gate blocks
            # are joined in that order, then transposed straight where they go (for layers above
            # the first, into the [x, h] matrix): a 2x512 model's Stepper, which every sample
            # pays before its first character, took 10-25 ms with an index copy, a transposing
            # copy and a concatenation per matrix (2-core Zen 3 EPYC).
            H = cfg.hidden
            lstm_blocks = [slice(0, 2 * H), slice(3 * H, 4 * H), slice(2 * H, 3 * H)]
            blocks = lstm_blocks if self.kind == "lstm" else [slice(None)]
            p: Callable[[str], torch.Tensor] = lambda name: getattr(rnn, name).detach().float()
            w: Callable[[str], torch.Tensor] = lambda name: _gate_order(p(name), blocks)
            t: Callable[[str], torch.Tensor] = lambda name: _transposed(p(name), blocks)
            # Above the first layer an LSTM or RNN step reads only its [x, h] matrix: there these
            # hold the first layer's alone (its input matrix goes into the token table).
            stacked = self.kind not in CUSTOM_CELLS and self.kind != "gru"
            apart = 1 if stacked else cfg.layers
            w_hh = [t(f"weight_hh_l{i}") for i in range(apart)]
            w_ih = [t(f"weight_ih_l{i}") for i in range(apart)]
            # The matrices a step multiplies by, in the step's precision (the custom cells' stay float32).
            pack: Callable[[torch.Tensor], Matrix] = _PACKS[self.dtype]
            self.w_hh: list[Matrix] = [pack(m) for m in w_hh]
            self.w_ih: list[Matrix] = [pack(m) for m in w_ih] if self.kind == "gru" else list(w_ih)
            if self.kind in CUSTOM_CELLS:
                # One bias per layer already; the recurrent product stays inside the step function.
                self.b_ih = [w(f"bias_l{i}") for i in range(cfg.layers)]
                if self.kind == "peephole":
                    self.peep = [w(f"peephole_l{i}") for i in range(cfg.layers)]
            else:
                b_ih = [w(f"bias_ih_l{i}") for i in range(cfg.layers)]
                b_hh = [w(f"bias_hh_l{i}") for i in range(cfg.layers)]
                if self.kind == "gru":
                    # The reset gate multiplies (W_hn h + b_hn), so b_hn cannot join the input bias.
                    self.b_ih, self.b_hh = b_ih, b_hh
                else:
                    self.b_ih = [a + b for a, b in zip(b_ih, b_hh)]
                    # Layers above the first: one product of [x, h] with the stacked matrices. Each
                    # layer's matrix for its product: the first layer's multiplies h alone.
                    self.w_cat: list[Matrix] = [self.w_hh[0]] + [
                        pack(_stacked(p(f"weight_ih_l{i}"), p(f"weight_hh_l{i}"), blocks)) for i in range(1, cfg.layers)
                    ]
            # Layer 0's input product depends only on the token: precompute it for every token.
            self.table = torch.addmm(self.b_ih[0], model.embed.weight.detach().float(), w_ih[0])
            self.w_out = model.head.weight.detach().float().t().contiguous()
            self.b_out = model.head.bias.detach().float().clone()

    @staticmethod
    def _mm(bias: torch.Tensor, x: torch.Tensor, w: Matrix) -> torch.Tensor:
        """``bias + x @ w`` in float32, ``w`` a float32 matrix or one packed by ``pack_bfloat16``
        or ``pack_int8``.

        One row on the CPU in float32 is a matrix-vector product, which numpy's BLAS
        (OpenBLAS in its wheels) streams at up to 3x the speed of torch's (see ``row_product``);
        ``SingleRow`` makes the same two calls, so both give the same values."""
        if isinstance(w, torch.Tensor) and w.dtype == torch.float32:
            if x.shape[0] == 1 and x.device.type == "cpu":
                return torch.add(torch.from_numpy(row_product(x.numpy(), w.numpy())), bias)
            return torch.addmm(bias, x, w)
        if isinstance(w, torch.ScriptObject):
            return torch.add(bias, int8_product(x, w))
        # The product's bfloat16 result joins the float32 bias as float32 (type promotion).
        return torch.add(bias, packed_product(x.to(torch.bfloat16), w))

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Logits for the next token after ``tokens`` (batch,), and the new state.

        The new state is written layer by layer into fresh tensors (no stacking at the end).
        A pair is the LSTM family's (h, c) (``state_tensors`` tells them apart the same way)."""
        H, L, kind = self.hidden, self.layers, self.kind
        # Each layer's input: the first's is its token's row of the table (its input product, bias
        # included), each layer's output is the input of the one above.
        x = torch.embedding(self.table, tokens)
        if isinstance(state, tuple):
            h_all, c_all = state
            if kind in CUSTOM_CELLS:
                return self._custom_step(x, h_all, c_all)
            h_next, c_next = torch.empty_like(h_all), torch.empty_like(c_all)
            for i in range(L):
                h = h_all[i]
                if i == 0:
                    g = self._mm(x, h, self.w_hh[0])
                else:
                    g = self._mm(self.b_ih[i], torch.cat([x, h], 1), self.w_cat[i])
                gates = torch.sigmoid(g[:, : 3 * H])
                c = torch.addcmul(
                    gates[:, H : 2 * H] * c_all[i], gates[:, :H], torch.tanh(g[:, 3 * H :]), out=c_next[i]
                )
                x = torch.mul(gates[:, 2 * H :], torch.tanh(c), out=h_next[i])
            return self._mm(self.b_out, x, self.w_out), (h_next, c_next)
        h_next = torch.empty_like(state)
        for i in range(L):
            h = state[i]
            if kind == "gru":
                gi = x if i == 0 else self._mm(self.b_ih[i], x, self.w_ih[i])
                gh = self._mm(self.b_hh[i], h, self.w_hh[i])
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H : 2 * H] + gh[:, H : 2 * H])
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                x = torch.add(n, z * (h - n), out=h_next[i])
                continue
            if i == 0:
                g = self._mm(x, h, self.w_hh[0])
            else:
                g = self._mm(self.b_ih[i], torch.cat([x, h], 1), self.w_cat[i])
            x = torch.tanh(g, out=h_next[i])
        return self._mm(self.b_out, x, self.w_out), h_next

    def _custom_step(self, x: torch.Tensor, h_all: torch.Tensor, c_all: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Peephole and CIFG: the layers' own step functions (float32 only), from the first
        layer's input ``x`` (its tokens' rows of the table)."""
        hs, cs = [], []
        for i in range(self.layers):
            gx = x if i == 0 else self._mm(self.b_ih[i], x, self.w_ih[i])
            # The step functions take W_hh as the layer stores it, (G*H, H): the transpose
            # of our pre-transposed copy, a view.
            if self.kind == "peephole":
                x, c = peephole_step(gx, h_all[i], c_all[i], cast(torch.Tensor, self.w_hh[i]).t(), self.peep[i])
            else:
                x, c = cifg_step(gx, h_all[i], c_all[i], cast(torch.Tensor, self.w_hh[i]).t())
            hs.append(x)
            cs.append(c)
        logits = self._mm(self.b_out, x, self.w_out)
        return logits, (torch.stack(hs), torch.stack(cs))


def _unpacked(w: torch.Tensor) -> Matrix:
    return w


_PACKS: dict[torch.dtype, Callable[[torch.Tensor], Matrix]] = {
    torch.float32: _unpacked,
    torch.bfloat16: pack_bfloat16,
    torch.int8: pack_int8,
}


def row_product(x: np.ndarray, w: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``x @ w`` for one row ``x`` (1, in) and a float32 matrix ``w`` (in, out), by numpy.

    At batch 1 a step's time is its matrix-vector products, bounded by how fast the weights
    stream from memory. On a 2-core AMD EPYC (Zen 4) torch's float32 product (MKL) read the
    step's matrices at 26-52 GB/s on two threads (up to 58 on one), where numpy's OpenBLAS
    read them at 65-125 GB/s from the 32 MB L3 cache they fit in (bench/sampler.py measures
    both)."""
    return np.matmul(x, w, out=out)


def _gate_order(x: torch.Tensor, blocks: list[slice]) -> torch.Tensor:
    """``x``'s gate blocks (its leading dimension) in the order of ``blocks``: joined into a copy,
    or ``x`` itself where one block is all of it."""
    return torch.cat([x[rows] for rows in blocks]) if len(blocks) > 1 else x[blocks[0]]


def _transposed(w: torch.Tensor, blocks: list[slice], out: torch.Tensor | None = None) -> torch.Tensor:
    """``w`` (gates x in) as (in x gates), its gate blocks in the order of ``blocks``, written
    into ``out`` (contiguous, so torch copies the transpose tile by tile) or a new matrix."""
    if out is None:
        out = torch.empty(w.shape[1], w.shape[0])
    return out.copy_(_gate_order(w, blocks).t())


def _stacked(ih: torch.Tensor, hh: torch.Tensor, blocks: list[slice]) -> torch.Tensor:
    """A layer's [x, h] matrix: the input matrix's transpose over the recurrent one's."""
    out = torch.empty(ih.shape[1] + hh.shape[1], ih.shape[0])
    _transposed(ih, blocks, out[: ih.shape[1]])
    _transposed(hh, blocks, out[ih.shape[1] :])
    return out
