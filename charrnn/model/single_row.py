"""The sampler's LSTM step for a single row, in place: what `charrnn sample` runs at batch 1.

At batch 1 a step's three matrix-vector products are bounded by the memory bus, and what
``Stepper.step`` adds around them, some 40 calls into torch (slices, selects, fresh tensors,
the concatenation of [x, h], the token lookup), cost ~40% on top. Most of those calls only
make views or allocate, so this class makes every view and buffer once: each layer's products
write into a fixed gates buffer, the gate functions and the cell update run in place on views of
it and of the cell state (an in-place call skips the output checks of an ``out=`` one), the
lower layer's new h is written straight into the upper layer's [x, h] input, and the first
layer's token row is a view picked from a Python list. A step is then the products and seven
element-wise calls per layer (one, below, with charrnn's C extension).

The temperature sampling after it runs cold: the products stream megabytes of weights through
the 2 MB caches, and a torch call (argument parsing, dispatch, a tensor iterator) touches far
more memory than a numpy ufunc. Its divisions (by the temperature, by the random draws) and
argmax, which IEEE arithmetic rounds exactly whoever computes them, are numpy ufuncs on numpy
views of the same buffers; only the softmax stays torch's (in float32 on a 2-core Xeon with
AMX, 337-339 us per character against 358-365 before, the same text). The same split in the
cell update (its products of two gate vectors) saved nothing measurable, nor did taking the
first layer's bfloat16 product for the next character beside the second layer's, so in torch's
calls the gate arithmetic is all torch. The float32 products are numpy's
(``stepper.row_product``), as in ``Stepper.step`` at batch 1.

Even so each torch call costs 2.5-4.5 us of parsing and dispatch on a 2-core Zen 3 EPYC, so
where ``charrnn.model.gate_kernel`` finds its C kernels equal to torch's arithmetic, a layer's bias and gate
calls are one kernel call, and the sampling's divisions and argmax two (its softmax stays
torch's): 1.35-1.44x the characters per second there (2x512).

Every call is the very operation ``Stepper.step`` and ``sample.pick`` make, on the same values in
the same layout (in place or into ``out=`` buffers instead of fresh tensors; a product of two
gates in either order is the same IEEE product), so the text is bit for bit the same for the
same seed. Measured in ``bench/sampler.py`` (see docs/export.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from charrnn.model import gate_kernel
from charrnn.model.network import State
from charrnn.model.stepper import Matrix, Stepper, row_product
from charrnn.runtime.kernels import int8_product, packed_product


class _Layer(NamedTuple):
    """A layer with a float32 product: numpy views of its input, weights and gates, the views
    torch's gate calls take, and the kernel's addresses."""

    inp_: np.ndarray
    w_: np.ndarray
    g_: np.ndarray
    views: gate_kernel.GateViews
    pointers: tuple[int, int, int, int]  # gates, cell, h, the upper layer's copy of h (or 0)


class _PackedLayer(NamedTuple):
    """A layer with a bfloat16 or int8 product: the product of its input and packed weights, its
    gates, the views torch's gate calls take, and the kernel's addresses."""

    product: Callable[[], torch.Tensor]
    g: torch.Tensor
    views: gate_kernel.GateViews
    pointers: tuple[int, int, int, int]


class SingleRow:
    """One row's LSTM state and logits in fixed buffers, advanced one token at a time."""

    @staticmethod
    def handles(stepper: object) -> bool:
        return isinstance(stepper, Stepper) and stepper.kind == "lstm"

    def __init__(self, stepper: Stepper, logits: torch.Tensor, state: State) -> None:
        H, L = stepper.hidden, stepper.layers
        self.stepper = stepper
        h, c = state
        # Layer i > 0 reads [x, h] from xh[i]; layer 0 reads its h where layer 1 reads its x.
        self.xh = torch.zeros(L, 1, 2 * H)
        self.c = c.detach().float().clone(memory_format=torch.contiguous_format)
        self.g = torch.empty(L, 1, 4 * H)
        self.logits = logits.detach().float().clone()
        self.rows = list(stepper.table.unsqueeze(1).unbind(0))
        # The gate arithmetic in one call per layer where it is torch's to the bit (charrnn.model.gate_kernel).
        self.kernels = gate_kernel.kernels(H)
        # Every layer's product has the Stepper's precision: one of these lists is empty.
        self.layers: list[_Layer] = []
        self.packed: list[_PackedLayer] = []
        self.tops = []  # each layer's h
        for i in range(L):
            own = self.xh[i, :, H:] if i > 0 or L == 1 else self.xh[1, :, :H]
            own.copy_(h[i])
            up = self.xh[i + 1, :, :H] if 0 < i < L - 1 else None
            inp = own if i == 0 else self.xh[i]
            w = stepper.w_hh[0] if i == 0 else stepper.w_cat[i]
            g = self.g[i]
            # The gates in place: i, f, o through one sigmoid, g through one tanh.
            views = gate_kernel.gate_views(g, self.c[i], own, up)
            pointers = (g.data_ptr(), self.c[i].data_ptr(), own.data_ptr(), 0 if up is None else up.data_ptr())
            if isinstance(w, torch.Tensor) and w.dtype == torch.float32:
                self.layers.append(_Layer(inp.numpy(), w.numpy(), g.numpy(), views, pointers))
            else:
                self.packed.append(_PackedLayer(_product(inp, w), g, views, pointers))
            self.tops.append(own)
        # numpy views for the float32 products (see stepper.row_product): the token rows, the
        # biases (layer 0's is already in its token's row, which a step adds instead), and the
        # output layer, float32 in either precision; and their addresses, for the kernels.
        self.rows_ = [row.numpy() for row in self.rows]
        self.biases_ = [b.numpy() for b in stepper.b_ih]
        self.row_pointers = [row.data_ptr() for row in self.rows]
        self.bias_pointers = [b.data_ptr() for b in stepper.b_ih]
        self.out_ = (self.tops[-1].numpy(), stepper.w_out.numpy(), stepper.b_out.numpy(), self.logits.numpy())
        self.out_pointers = (self.logits.data_ptr(), stepper.b_out.data_ptr(), self.logits.shape[-1])

    def state(self) -> State:
        """The state as ``Stepper.step`` returns it: (h, c), each (layers, 1, hidden), copied."""
        return torch.stack(self.tops), self.c.clone()

    def step(self, token: int) -> torch.Tensor:
        """The logits after ``token`` (a view of the one buffer every step overwrites)."""
        st, kernels = self.stepper, self.kernels
        # Each layer's product and bias, then its gates; the kernel adds a float32 product's bias.
        if self.packed:
            for i, (product, g, views, pointers) in enumerate(self.packed):
                row = self.rows[token] if i == 0 else st.b_ih[i]
                torch.add(row, product(), out=g)
                if kernels is None:
                    gate_kernel.torch_gates(*views)
                else:
                    kernels.lstm_cell(pointers[0], 0, *pointers[1:], st.hidden)
        else:
            for i, (inp_, w_, g_, views, pointers) in enumerate(self.layers):
                if kernels is None:
                    np.add(row_product(inp_, w_, g_), self.rows_[token] if i == 0 else self.biases_[i], out=g_)
                    gate_kernel.torch_gates(*views)
                else:
                    row_product(inp_, w_, g_)
                    bias = self.row_pointers[token] if i == 0 else self.bias_pointers[i]
                    kernels.lstm_cell(pointers[0], bias, *pointers[1:], st.hidden)
        top_, w_out_, b_out_, logits_ = self.out_
        row_product(top_, w_out_, logits_)
        if kernels is None:
            np.add(logits_, b_out_, out=logits_)
        else:
            kernels.add(*self.out_pointers)
        return self.logits


def _product(inp: torch.Tensor, w: Matrix) -> Callable[[], torch.Tensor]:
    """``inp @ w`` for a packed matrix, as ``Stepper`` computes it: bfloat16 rows through a
    buffer the input is copied into, int8's straight from the float32 input."""
    if isinstance(w, torch.Tensor):
        low = torch.empty(inp.shape, dtype=torch.bfloat16)
        return lambda: packed_product(low.copy_(inp), w)
    return lambda: int8_product(inp, w)
