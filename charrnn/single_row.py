"""The sampler's LSTM step for a single row, in place: what `charrnn sample` runs at batch 1.

At batch 1 a step's three matrix-vector products are bounded by the memory bus, and what
``Stepper.step`` adds around them, some 40 calls into torch (slices, selects, fresh tensors,
the concatenation of [x, h], the token lookup), cost ~40% on top. Most of those calls only
make views or allocate, so this class makes every view and buffer once: each layer's products
write into a fixed gates buffer, the gate functions and the cell update run in place on views of
it and of the cell state (an in-place call skips the output checks of an ``out=`` one), the
lower layer's new h is written straight into the upper layer's [x, h] input, and the first
layer's token row is a view picked from a Python list. A step is then the products and seven
element-wise calls per layer.

The temperature sampling after it runs cold: the products stream megabytes of weights through
the 2 MB caches, and a torch call (argument parsing, dispatch, a tensor iterator) touches far
more memory than a numpy ufunc. Its divisions (by the temperature, by the random draws) and
argmax, which IEEE arithmetic rounds exactly whoever computes them, are numpy ufuncs on numpy
views of the same buffers; only the softmax stays torch's (in float32 on a 2-core Xeon with
AMX, 337-339 us per character against 358-365 before, the same text). The same split in the
cell update (its products of two gate vectors) saved nothing measurable, nor did taking the
first layer's bfloat16 product for the next character beside the second layer's, so the gate
arithmetic is all torch. The float32 products are numpy's (``stepper.row_product``), as in
``Stepper.step`` at batch 1.

Every call is the very operation ``Stepper.step`` and ``sample.pick`` make, on the same values in
the same layout (in place or into ``out=`` buffers instead of fresh tensors; a product of two
gates in either order is the same IEEE product), so the text is bit for bit the same for the
same seed. Measured in ``bench/sampler.py`` (see docs/export.md).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch

from charrnn.model import State
from charrnn.stepper import Stepper, row_product


class SingleRow:
    """One row's LSTM state and logits in fixed buffers, advanced one token at a time."""

    @staticmethod
    def handles(stepper: object) -> bool:
        return isinstance(stepper, Stepper) and stepper.kind == "lstm"

    def __init__(self, stepper: Stepper, logits: torch.Tensor, state: State) -> None:
        H, L = stepper.hidden, stepper.layers
        self.stepper = stepper
        bf16 = stepper.dtype == torch.bfloat16
        h, c = state
        # Layer i > 0 reads [x, h] from xh[i]; layer 0 reads its h where layer 1 reads its x.
        self.xh = torch.zeros(L, 1, 2 * H)
        self.c = c.detach().float().clone()
        self.g = torch.empty(L, 1, 4 * H)
        self.logits = logits.detach().float().clone()
        self.rows = list(stepper.table.unsqueeze(1).unbind(0))
        self.layers = []
        for i in range(L):
            own = self.xh[i, :, H:] if i > 0 or L == 1 else self.xh[1, :, :H]
            own.copy_(h[i])
            up = self.xh[i + 1, :, :H] if 0 < i < L - 1 else None
            inp = own if i == 0 else self.xh[i]
            w = stepper.w_hh[0] if i == 0 else stepper.w_cat[i]
            low = torch.empty(inp.shape, dtype=torch.bfloat16) if bf16 else None
            g = self.g[i]
            # The gates in place: i, f, o through one sigmoid, g through one tanh.
            self.layers.append(
                (inp, low, w, g, g[:, : 3 * H], g[:, 3 * H :], g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H],
                 self.c[i], own, up, inp.numpy(), None if bf16 else w.numpy(), g.numpy())
            )
        # numpy views for the float32 products (see stepper.row_product): the token rows, the
        # biases, and the output layer, float32 in either precision.
        self.rows_ = [row.numpy() for row in self.rows]
        self.biases_ = [None] + [b.numpy() for b in stepper.b_ih[1:]]
        self.out_ = (self.layers[-1][10].numpy(), stepper.w_out.numpy(), stepper.b_out.numpy(), self.logits.numpy())

    def state(self) -> State:
        """The state as ``Stepper.step`` returns it: (h, c), each (layers, 1, hidden), copied."""
        return torch.stack([layer[10] for layer in self.layers]), self.c.clone()

    def step(self, token: int) -> torch.Tensor:
        """The logits after ``token`` (a view of the one buffer every step overwrites)."""
        st = self.stepper
        for i, (inp, low, w, g, gs, gt, si, sf, so, c, own, up, inp_, w_, g_) in enumerate(self.layers):
            if low is None:
                np.add(row_product(inp_, w_, g_), self.rows_[token] if i == 0 else self.biases_[i], out=g_)
            else:
                low.copy_(inp)
                bias = self.rows[token] if i == 0 else st.b_ih[i]
                torch.add(bias, torch.ops.mkldnn._linear_pointwise(low, w, None, "none", [], ""), out=g)
            gs.sigmoid_()
            gt.tanh_()
            c.mul_(sf)
            c.addcmul_(si, gt)
            torch.tanh(c, out=own)
            own.mul_(so)
            if up is not None:
                up.copy_(own)
        top_, w_out_, b_out_, logits_ = self.out_
        np.add(row_product(top_, w_out_, logits_), b_out_, out=logits_)
        return self.logits


def temperature_pick(logits: torch.Tensor, temp: float, races: Iterator[np.ndarray] | None) -> Callable[[], int]:
    """``sample.pick``'s temperature sampling of the fixed ``logits`` buffer as a function of
    nothing, returning the token: the same division, softmax, division by the Exp(1) draws
    (``races``, else the global generator's) and argmax, into fixed buffers."""
    V = logits.shape[-1]
    scaled, probs, own = (torch.empty(1, V) for _ in range(3))
    logits_, scaled_, probs_, own_ = logits.numpy(), scaled.numpy(), probs.numpy(), own.numpy()
    temp32, divide, softmax = np.float32(temp), np.divide, torch.softmax

    def choose() -> int:
        # torch's divisions overflow to inf (a tiny --temp) and divide by a zero draw silently;
        # numpy's would warn.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            divide(logits_, temp32, out=scaled_)
            softmax(scaled, -1, out=probs)
            if races is None:
                own.exponential_()
            return int(divide(probs_, own_ if races is None else next(races), out=probs_).argmax())

    return choose
