"""Exporting a trained model to ONNX, so it runs where Python does not: onnxruntime in a service
written in another language, onnxruntime-web in a browser, a phone.

The graph is ``(ids[batch, seq], h[, c]) -> (logits[batch, seq, vocab], h_next[, c_next])``
with batch and sequence length left dynamic, so one file scores a whole text and steps a
sampler one token at a time. The state is ``(layers, batch, hidden)``, as the model keeps it;
a fresh one is zeros. Everything a runtime needs to turn ids into text travels in the model's
``metadata_props`` (see ``metadata``).

The graph is written here with ``onnx.helper`` rather than traced with ``torch.onnx.export``.
Tried with torch 2.13 and onnxscript 0.7.2 on a 2-layer model exported at batch 2, length 7
with both dimensions declared dynamic, then run at batch 3, length 13: the dynamo exporter maps
``nn.LSTM`` and ``nn.GRU`` to ONNX's LSTM and GRU operators and runs, but fixes the length of
``nn.RNN`` and of our own cells (whose layers loop over time in Python) at 7, which
onnxruntime then refuses; the TorchScript exporter (deprecated) also maps ``nn.RNN`` to ONNX's
RNN but unrolls the custom cells' 7 steps. Writing the graph directly gives every cell one
dynamic-length form with the standard operators the exporter picks where it can:
``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` become ONNX's LSTM, GRU (``linear_before_reset``,
PyTorch's formulation) and RNN; the peephole LSTM is ONNX's LSTM with its peephole input ``P``,
which has exactly our equations; CIFG, which no ONNX operator computes, is a ``Scan`` over time
whose body is its step's elementwise operations.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch

from charrnn._version import __version__
from charrnn.errors import CharrnnError
from charrnn.model.network import LSTM_FAMILY, CharRNN
from charrnn.runtime.files import write_atomic

FORMATS = ("onnx",)
# Opset 17 (2022): LSTM/GRU/RNN-14, Scan-16; read by onnxruntime >= 1.12 and onnxruntime-web.
OPSET = 17
META = "charrnn."

# Row blocks of PyTorch's fused gate matrices, in the order ONNX's operators want them.
_LSTM_ORDER = (0, 3, 1, 2)  # PyTorch i, f, g, o -> ONNX i, o, f, c
_GRU_ORDER = (1, 0, 2)  # PyTorch r, z, n -> ONNX z, r, h


def _onnx():
    try:
        import onnx
    except ImportError:
        raise CharrnnError("exporting to ONNX needs the onnx package: pip install 'charrnn[onnx]'") from None
    return onnx


def export_checkpoint(checkpoint_path: str | Path, output: str | Path, fmt: str = "onnx") -> Path:
    """Write the checkpoint's model to ``output`` in ``fmt`` (only ONNX for now); returns the path."""
    if fmt not in FORMATS:
        raise CharrnnError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    onnx = _onnx()
    from charrnn.model import checkpoint

    model, vocab = checkpoint.build_model(checkpoint.load(checkpoint_path))
    proto = build_onnx(model, vocab)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as e:
        raise CharrnnError(f"the exported graph failed ONNX's checker ({str(e).splitlines()[0]})") from None
    write_atomic(Path(output), proto.SerializeToString())
    return Path(output)


def metadata(model: CharRNN, vocab) -> dict[str, str]:
    """What a runtime needs beside the graph, as ``metadata_props`` (all strings).

    ``charrnn.token_bytes`` (a JSON list of each token's UTF-8 bytes, base64) decodes any
    vocabulary without SentencePiece; ``charrnn.chars`` (a character vocabulary: id i is its
    i-th character) or ``charrnn.sentencepiece_model`` (base64 of the serialised model) encodes
    text; ``charrnn.model_config`` (JSON) gives the layers and hidden size the state needs.
    """
    meta = {
        "version": __version__,
        "vocab_kind": vocab.kind,
        "model_config": json.dumps(model.cfg.to_dict()),
        "state": "h,c" if model.cfg.model in LSTM_FAMILY else "h",
        "token_bytes": json.dumps([base64.b64encode(b).decode("ascii") for b in vocab.token_bytes()]),
    }
    if vocab.kind == "char":
        meta["chars"] = vocab.chars
    else:
        meta["sentencepiece_model"] = base64.b64encode(vocab.model).decode("ascii")
    return {META + k: v for k, v in meta.items()}


class _Graph:
    """Nodes and initialisers accumulated under unique names."""

    def __init__(self, onnx, prefix: str = "") -> None:
        self.onnx = onnx
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def const(self, name: str, value: np.ndarray | torch.Tensor) -> str:
        array = value.detach().float().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attrs) -> list[str]:
        if isinstance(outputs, int):
            self._count += 1
            outputs = [f"{self.prefix}{op_type.lower()}_{self._count}_{i}" for i in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs


def _blocks(w: torch.Tensor, order: tuple[int, ...], H: int) -> torch.Tensor:
    """The gate row blocks of ``w`` (G*H, ...) rearranged into ``order``."""
    return torch.cat([w[k * H : (k + 1) * H] for k in order])


def _layer_params(model: CharRNN, layer: int) -> dict[str, torch.Tensor]:
    """W, R, B (and P) of one layer as ONNX's recurrent operators take them, direction axis first."""
    rnn, kind, H = model.rnn, model.cfg.model, model.cfg.hidden
    p = lambda name: getattr(rnn, f"{name}_l{layer}").detach().float()
    if kind == "peephole":
        b = _blocks(p("bias"), _LSTM_ORDER, H)
        p_i, p_f, p_o = p("peephole").chunk(3)
        out = {
            "W": _blocks(p("weight_ih"), _LSTM_ORDER, H),
            "R": _blocks(p("weight_hh"), _LSTM_ORDER, H),
            "B": torch.cat([b, torch.zeros_like(b)]),
            "P": torch.cat([p_i, p_o, p_f]),
        }
    else:
        order = {"lstm": _LSTM_ORDER, "gru": _GRU_ORDER, "rnn": (0,)}[kind]
        out = {
            "W": _blocks(p("weight_ih"), order, H),
            "R": _blocks(p("weight_hh"), order, H),
            "B": torch.cat([_blocks(p("bias_ih"), order, H), _blocks(p("bias_hh"), order, H)]),
        }
    return {k: v[None] for k, v in out.items()}


def _recurrent_layer(
    g: _Graph, model: CharRNN, layer: int, x: str, h0: str, c0: str | None
) -> tuple[str, str, str | None]:
    """One layer with ONNX's own operator: outputs (seq, batch, H) and the final h (and c)."""
    kind, H = model.cfg.model, model.cfg.hidden
    w = {k: g.const(f"l{layer}_{k}", v) for k, v in _layer_params(model, layer).items()}
    if kind in ("lstm", "peephole"):
        inputs = [x, w["W"], w["R"], w["B"], "", h0, c0 or ""] + ([w["P"]] if "P" in w else [])
        y, h, c = g.op("LSTM", inputs, 3, hidden_size=H)
    elif kind == "gru":
        (y, h), c = g.op("GRU", [x, w["W"], w["R"], w["B"], "", h0], 2, hidden_size=H, linear_before_reset=1), None
    else:
        (y, h), c = g.op("RNN", [x, w["W"], w["R"], w["B"], "", h0], 2, hidden_size=H), None
    (y,) = g.op("Squeeze", [y, "axis_1"])  # (seq, directions=1, batch, H) -> (seq, batch, H)
    return y, h, c


def _cifg_layer(g: _Graph, model: CharRNN, layer: int, x: str, h0: str, c0: str | None) -> tuple[str, str, str]:
    """One CIFG layer as a Scan over time of ``cifg_step``'s operations, in its order:
    ``g = x W_ih^T + b + h W_hh^T``, then ``c = cand + f (c - cand)``, ``h = σ(o) tanh(c)``."""
    if c0 is None:
        raise ValueError("a CIFG layer carries a cell state: c0 is needed")
    onnx, H = g.onnx, model.cfg.hidden
    p = lambda name: getattr(model.rnn, f"{name}_l{layer}").detach().float()
    w_in, bias = g.const(f"l{layer}_W_ih_T", p("weight_ih").t()), g.const(f"l{layer}_bias", p("bias"))
    w_hh = g.const(f"l{layer}_W_hh_T", p("weight_hh").t())
    split = g.const(f"l{layer}_split", np.array([H, H, H], dtype=np.int64))
    (gx,) = g.op("Add", g.op("MatMul", [x, w_in]) + [bias])  # every step's input part at once
    n = lambda s: f"l{layer}_{s}"
    body = _Graph(onnx, prefix=n("step_"))  # a subgraph's names must not shadow the outer graph's
    (pre,) = body.op("Add", [n("gx_t")] + body.op("MatMul", [n("h_prev"), w_hh]))
    f_pre, c_pre, o_pre = body.op("Split", [pre, split], 3, axis=1)
    (f,), (cand,) = body.op("Sigmoid", [f_pre]), body.op("Tanh", [c_pre])
    (fd,) = body.op("Mul", [f] + body.op("Sub", [n("c_prev"), cand]))
    body.op("Add", [cand, fd], [n("c_new")])
    body.op("Mul", body.op("Sigmoid", [o_pre]) + body.op("Tanh", [n("c_new")]), [n("h_new")])
    body.op("Identity", [n("h_new")], [n("y_t")])
    f32 = onnx.TensorProto.FLOAT
    info = lambda name, width: onnx.helper.make_tensor_value_info(n(name), f32, ["batch", width])
    graph = onnx.helper.make_graph(
        body.nodes,
        n("step"),
        [info("h_prev", H), info("c_prev", H), info("gx_t", 3 * H)],
        [info("h_new", H), info("c_new", H), info("y_t", H)],
    )
    h0, c0 = (g.op("Squeeze", [s, "axis_0"])[0] for s in (h0, c0))
    h, c, y = g.op("Scan", [h0, c0, gx], 3, body=graph, num_scan_inputs=1)
    (h,), (c,) = (g.op("Unsqueeze", [s, "axis_0"]) for s in (h, c))
    return y, h, c


def build_onnx(model: CharRNN, vocab):
    """The model as an ``onnx.ModelProto`` (see the module docstring for its inputs and outputs)."""
    onnx = _onnx()
    helper, f32 = onnx.helper, onnx.TensorProto.FLOAT
    cfg = model.cfg
    paired = cfg.model in LSTM_FAMILY
    g = _Graph(onnx)
    for axis in (0, 1):
        g.const(f"axis_{axis}", np.array([axis], dtype=np.int64))
    embed = g.const("embedding", model.embed.weight)
    (x,) = g.op("Transpose", g.op("Gather", [embed, "ids"]), perm=[1, 0, 2])  # time-major, as the operators read
    hs: list[str] = []
    cs: list[str] = []
    for layer in range(cfg.layers):
        at = [
            g.const(f"l{layer}_{e}", np.array([v], dtype=np.int64)) for e, v in (("start", layer), ("end", layer + 1))
        ]
        h0 = g.op("Slice", ["h", *at, "axis_0"])[0]
        c0 = g.op("Slice", ["c", *at, "axis_0"])[0] if paired else None
        layer_fn = _cifg_layer if cfg.model == "cifg" else _recurrent_layer
        x, h, c = layer_fn(g, model, layer, x, h0, c0)
        hs.append(h)
        if c is not None:
            cs.append(c)
    head = g.const("head_weight_T", model.head.weight.t())
    (out,) = g.op("Add", g.op("MatMul", [x, head]) + [g.const("head_bias", model.head.bias)])
    g.op("Transpose", [out], ["logits"], perm=[1, 0, 2])
    g.op("Concat", hs, ["h_next"], axis=0)
    state = lambda name: helper.make_tensor_value_info(name, f32, [cfg.layers, "batch", cfg.hidden])
    inputs = [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "seq"]), state("h")]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", cfg.vocab_size]), state("h_next")]
    if paired:
        g.op("Concat", cs, ["c_next"], axis=0)
        inputs.append(state("c"))
        outputs.append(state("c_next"))
    graph = helper.make_graph(g.nodes, "charrnn", inputs, outputs, g.initializers)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="charrnn",
        producer_version=__version__,
        doc_string=f"charrnn {cfg.model} {cfg.layers}x{cfg.hidden}",
    )
    proto.ir_version = min(proto.ir_version, 8)  # IR 8 pairs with opset 17: older runtimes refuse newer IRs
    helper.set_model_props(proto, metadata(model, vocab))
    return proto
