"""The recurrent cells: our peephole and CIFG LSTMs against their equations, nn.LSTM / nn.GRU
against the textbook ones gate by gate, and every --model trained and sampled through the CLI."""

import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, run_cli
from torch import nn

from charrnn.errors import CharrnnError
from charrnn.model.cells import (
    CIFGLSTM,
    PeepholeLSTM,
    cifg_step,
    gru_weights_from_torch,
    lstm_weights_from_torch,
    peephole_step,
    reference_gru_step,
    reference_lstm_step,
)
from charrnn.model.network import CharRNN, ModelConfig, count_parameters, size_in_parameters

# A hand-sized example: input size 2, hidden size 2, one row. Each textbook gate matrix acts on
# [h_{t-1}, x_t] (columns h1, h2, x1, x2).
X = np.array([[0.5, -1.0]])
H0 = np.array([[0.1, -0.2]])
C0 = np.array([[0.3, 0.6]])
W = {
    "i": np.array([[0.2, -0.1, 0.4, 0.3], [0.0, 0.5, -0.3, 0.1]]),
    "f": np.array([[0.1, 0.2, -0.2, 0.6], [-0.4, 0.3, 0.2, 0.0]]),
    "c": np.array([[0.3, -0.5, 0.1, -0.2], [0.2, 0.1, 0.7, 0.4]]),
    "o": np.array([[-0.3, 0.4, 0.5, 0.1], [0.6, -0.2, -0.1, 0.3]]),
}
B = {"i": np.array([0.1, -0.1]), "f": np.array([1.0, 0.5]), "c": np.array([0.0, 0.2]), "o": np.array([-0.2, 0.3])}
P = {"i": np.array([0.5, -0.4]), "f": np.array([0.3, 0.2]), "o": np.array([-0.6, 0.7])}


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def layout(gates):
    """Our layers' layout of the textbook gates: W_ih (G*H, in), W_hh (G*H, H), bias (G*H), float64."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)
    w_hh = t(np.concatenate([W[g][:, :2] for g in gates]))
    w_ih = t(np.concatenate([W[g][:, 2:] for g in gates]))
    return w_ih, w_hh, t(np.concatenate([B[g] for g in gates]))


def as_t(a):
    return torch.tensor(a, dtype=torch.float64)


def hand_peephole():
    hx = np.concatenate([H0, X], 1)
    i = sigmoid(hx @ W["i"].T + P["i"] * C0 + B["i"])
    f = sigmoid(hx @ W["f"].T + P["f"] * C0 + B["f"])
    c = f * C0 + i * np.tanh(hx @ W["c"].T + B["c"])
    o = sigmoid(hx @ W["o"].T + P["o"] * c + B["o"])
    return o * np.tanh(c), c


def hand_cifg():
    hx = np.concatenate([H0, X], 1)
    f = sigmoid(hx @ W["f"].T + B["f"])
    c = f * C0 + (1 - f) * np.tanh(hx @ W["c"].T + B["c"])
    o = sigmoid(hx @ W["o"].T + B["o"])
    return o * np.tanh(c), c


def test_peephole_step_matches_hand_computation():
    w_ih, w_hh, b = layout("ifco")
    peep = as_t(np.concatenate([P["i"], P["f"], P["o"]]))
    h, c = peephole_step(as_t(X) @ w_ih.T + b, as_t(H0), as_t(C0), w_hh, peep)
    want_h, want_c = hand_peephole()
    np.testing.assert_allclose(c.numpy(), want_c, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), want_h, atol=1e-12)
    # The layer, given the same parameters by name, takes the same step.
    layer = PeepholeLSTM(2, 2).double()
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_l0", b), ("peephole_l0", peep)):
            getattr(layer, name).copy_(value)
    out, (hn, cn) = layer(as_t(X)[:, None], (as_t(H0)[None], as_t(C0)[None]))
    np.testing.assert_allclose(out[:, 0].detach().numpy(), want_h, atol=1e-12)
    np.testing.assert_allclose(hn[0].detach().numpy(), want_h, atol=1e-12)
    np.testing.assert_allclose(cn[0].detach().numpy(), want_c, atol=1e-12)


def test_cifg_step_matches_hand_computation():
    w_ih, w_hh, b = layout("fco")
    h, c = cifg_step(as_t(X) @ w_ih.T + b, as_t(H0), as_t(C0), w_hh)
    want_h, want_c = hand_cifg()
    np.testing.assert_allclose(c.numpy(), want_c, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), want_h, atol=1e-12)
    layer = CIFGLSTM(2, 2).double()
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_l0", b)):
            getattr(layer, name).copy_(value)
    out, (hn, cn) = layer(as_t(X)[:, None], (as_t(H0)[None], as_t(C0)[None]))
    np.testing.assert_allclose(out[:, 0].detach().numpy(), want_h, atol=1e-12)
    np.testing.assert_allclose(hn[0].detach().numpy(), want_h, atol=1e-12)
    np.testing.assert_allclose(cn[0].detach().numpy(), want_c, atol=1e-12)


def _random_layer(cls, layers=2, inp=3, hidden=4):
    torch.manual_seed(0)
    layer = cls(inp, hidden, num_layers=layers).double()
    if cls is PeepholeLSTM:
        with torch.no_grad():  # nonzero peepholes, so their paths count
            for i in range(layers):
                getattr(layer, f"peephole_l{i}").uniform_(-0.5, 0.5)
    return layer


@pytest.mark.parametrize("cls", [PeepholeLSTM, CIFGLSTM])
def test_step_matches_sequence_loop(cls):
    layer = _random_layer(cls).eval()
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 2, 3, 4, dtype=torch.float64).unbind(0)
    out, (hn, cn) = layer(x, (h0, c0))
    h, c = list(h0), list(c0)
    for t in range(7):
        inp = x[:, t]
        for i in range(2):
            p = lambda name, i=i: getattr(layer, f"{name}_l{i}")
            gx = inp @ p("weight_ih").T + p("bias")
            if cls is PeepholeLSTM:
                h[i], c[i] = peephole_step(gx, h[i], c[i], p("weight_hh"), p("peephole"))
            else:
                h[i], c[i] = cifg_step(gx, h[i], c[i], p("weight_hh"))
            inp = h[i]
        torch.testing.assert_close(out[:, t], inp)
    torch.testing.assert_close(hn, torch.stack(h))
    torch.testing.assert_close(cn, torch.stack(c))
    assert out.shape == (3, 7, 4) and hn.shape == cn.shape == (2, 3, 4)


@pytest.mark.parametrize("cls", [PeepholeLSTM, CIFGLSTM])
def test_gradcheck(cls):
    layer = _random_layer(cls, layers=2, inp=2, hidden=3)
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)

    def run(x, h0, c0, *ps):
        out, (h, c) = torch.func.functional_call(layer, dict(zip(names, ps)), (x, (h0, c0)))
        return out, h, c

    assert torch.autograd.gradcheck(run, (x, h0, c0, *params))


def test_initialisation_and_state_type():
    layer = PeepholeLSTM(5, 4, num_layers=2)
    w = layer.weight_hh_l1.detach()
    for k in range(4):  # each gate's recurrent block is orthogonal
        block = w[4 * k : 4 * (k + 1)]
        torch.testing.assert_close(block @ block.T, torch.eye(4), atol=1e-5, rtol=0)
    assert layer.bias_l0[4:8].eq(1).all() and layer.bias_l0[:4].eq(0).all() and layer.bias_l0[8:].eq(0).all()
    assert layer.peephole_l0.eq(0).all()
    assert CIFGLSTM(5, 4).bias_l0[:4].eq(1).all()
    with pytest.raises(CharrnnError, match="tuple"):
        layer(torch.randn(1, 3, 5), torch.zeros(2, 1, 4))


# -- nn.LSTM / nn.GRU against the textbook equations --------------------------------------------

SAT = 40.0  # a bias that pins a sigmoid gate at 0 or 1 (and tanh at -1 or 1) in float64


def _torch_rnn(cls):
    torch.manual_seed(1)
    return cls(3, 4, num_layers=2, batch_first=True).double()


def _inputs():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    h0, c0 = torch.randn(2, 2, 2, 4, dtype=torch.float64).unbind(0)
    return x, h0, c0


def test_reference_lstm_matches_nn_lstm():
    rnn = _torch_rnn(nn.LSTM)
    x, h0, c0 = _inputs()
    with torch.no_grad():
        out, (hn, cn) = rnn(x, (h0, c0))
    ws = [lstm_weights_from_torch(rnn, i) for i in range(2)]
    h, c = list(h0), list(c0)
    for t in range(5):
        inp = x[:, t]
        for i in range(2):
            h[i], c[i], _ = reference_lstm_step(inp, h[i], c[i], ws[i])
            inp = h[i]
        torch.testing.assert_close(out[:, t], inp)
    torch.testing.assert_close(hn, torch.stack(h))
    torch.testing.assert_close(cn, torch.stack(c))


# Saturated gates in PyTorch's row order i, f, g, o, and what the equations then say h and c are.
LSTM_CASES = [
    ({"i": 1, "f": -1, "g": 1, "o": 1}, lambda c0: (math.tanh(1.0), 1.0)),  # c = g = 1
    ({"i": -1, "f": 1, "g": 1, "o": 1}, lambda c0: (torch.tanh(c0), c0)),  # c kept, nothing let in
    ({"i": 1, "f": 1, "g": -1, "o": 1}, lambda c0: (torch.tanh(c0 - 1), c0 - 1)),  # c + g, g = -1
    ({"i": 1, "f": -1, "g": 1, "o": -1}, lambda c0: (0.0, 1.0)),  # output gate shut
]


@pytest.mark.parametrize("signs, expect", LSTM_CASES)
def test_nn_lstm_gate_by_gate(signs, expect):
    rnn = nn.LSTM(3, 4).double()
    with torch.no_grad():
        for k, gate in enumerate("ifgo"):
            rnn.bias_ih_l0[4 * k : 4 * (k + 1)] = signs[gate] * SAT
    x, h0, c0 = _inputs()
    x, h0, c0 = x[:, 0], h0[0], c0[0]
    with torch.no_grad():
        _, (h, c) = rnn(x[None], (h0[None], c0[None]))
    want_h, want_c = expect(c0)
    torch.testing.assert_close(h[0], torch.as_tensor(want_h, dtype=torch.float64).expand_as(h0))
    torch.testing.assert_close(c[0], torch.as_tensor(want_c, dtype=torch.float64).expand_as(c0))
    # The reference, through the weight mapping, sees each gate where PyTorch put it.
    ref_h, ref_c, gates = reference_lstm_step(x, h0, c0, lstm_weights_from_torch(rnn, 0))
    for gate, sign in signs.items():
        want = float(sign) if gate == "g" else float(sign > 0)
        torch.testing.assert_close(gates[gate], torch.full_like(gates[gate], want))
    torch.testing.assert_close(ref_h, h[0])
    torch.testing.assert_close(ref_c, c[0])


def test_reference_gru_matches_nn_gru():
    rnn = _torch_rnn(nn.GRU)
    x, h0, _ = _inputs()
    with torch.no_grad():
        out, hn = rnn(x, h0)
    ws = [gru_weights_from_torch(rnn, i) for i in range(2)]
    h = list(h0)
    for t in range(5):
        inp = x[:, t]
        for i in range(2):
            h[i], _ = reference_gru_step(inp, h[i], ws[i])
            inp = h[i]
        torch.testing.assert_close(out[:, t], inp)
    torch.testing.assert_close(hn, torch.stack(h))


@pytest.mark.parametrize("r, z", [(-1, -1), (1, -1), (-1, 1)])
def test_nn_gru_gate_by_gate(r, z):
    rnn = nn.GRU(3, 4).double()
    with torch.no_grad():
        rnn.bias_ih_l0[:4] = r * SAT  # rows r, z, n
        rnn.bias_ih_l0[4:8] = z * SAT
        rnn.bias_hh_l0[8:].fill_(0.7)  # b_hn: dropped with the reset gate when r = 0
    x, h0, _ = _inputs()
    x, h0 = x[:, 0], h0[0]
    with torch.no_grad():
        _, h = rnn(x[None], h0[None])
    W_in, b_in = rnn.weight_ih_l0[8:].detach(), rnn.bias_ih_l0[8:].detach()
    W_hn, b_hn = rnn.weight_hh_l0[8:].detach(), rnn.bias_hh_l0[8:].detach()
    if z > 0:
        want = h0  # update gate 1: the state is kept
    elif r < 0:
        want = torch.tanh(x @ W_in.T + b_in)  # reset after the product: W_hn h + b_hn both gone
    else:
        want = torch.tanh(x @ W_in.T + b_in + h0 @ W_hn.T + b_hn)
    torch.testing.assert_close(h[0], want)
    ref_h, gates = reference_gru_step(x, h0, gru_weights_from_torch(rnn, 0))
    torch.testing.assert_close(gates["r"], torch.full_like(h0, float(r > 0)))
    torch.testing.assert_close(gates["z"], torch.full_like(h0, float(z > 0)))
    torch.testing.assert_close(ref_h, h[0])


# -- every cell through the CLI -----------------------------------------------------------------


def unigram_entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole", "cifg"])
def test_every_cell_trains_and_samples(cell, repetitive_corpus, tmp_path):
    r = run_cli("train", repetitive_corpus, *TINY, "--model", cell, "--steps", "150", "--out", tmp_path, "--quiet")
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = min(line["val_bpc"] for line in lines if line["val_bpc"] is not None)
    entropy = unigram_entropy(repetitive_corpus.read_text())
    assert best < 0.25 * entropy, (cell, best, entropy)  # at most a quarter of the unigram entropy
    a = run_cli("sample", tmp_path, "--length", "80", "--seed", "4", "--prime", "ANNA")
    b = run_cli("sample", tmp_path, "--length", "80", "--seed", "4", "--prime", "ANNA")
    assert a.exit_code == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("ANNA") and len(a.stdout) == len("ANNA") + 80 + 1


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole", "cifg"])
@pytest.mark.parametrize("layers, hidden, embed", [(1, 8, 5), (3, 12, 7)])
def test_a_models_size_is_known_before_it_is_built(cell, layers, hidden, embed):
    """auto and the memory check size a model before building it: the count must be the built one's."""
    model = CharRNN(ModelConfig(vocab_size=11, model=cell, layers=layers, hidden=hidden, embed=embed))
    assert size_in_parameters(11, layers, hidden, embed, cell) == count_parameters(model)


@pytest.mark.parametrize("cell", ["lstm", "gru", "peephole"])
def test_weight_drop_masks_recurrent_weights_in_training_only(cell):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=20, model=cell, layers=2, hidden=16, embed=8, dropout=0.0, weight_drop=0.5)
    model = CharRNN(cfg)
    x = torch.randint(0, 20, (3, 7))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    plain = CharRNN(replace(cfg, weight_drop=0.0))
    plain.load_state_dict(saved)

    torch.manual_seed(5)
    dropped, _ = model(x)
    torch.manual_seed(5)
    masked = {n: F.dropout(p, 0.5) for n, p in plain.rnn.named_parameters() if n.startswith("weight_hh")}
    assert len(masked) == 2 and all((w == 0).any() for w in masked.values())
    with torch.no_grad():
        for name, w in masked.items():
            getattr(plain.rnn, name).copy_(w)
    expected, _ = plain(x)
    assert torch.allclose(dropped, expected, atol=1e-6)  # the same net with masked (and rescaled) W_hh
    assert not torch.allclose(dropped, model(x)[0])  # a fresh mask each forward

    dropped.sum().backward()
    grad = model.rnn.weight_hh_l0.grad
    assert (grad[masked["weight_hh_l0"] == 0] == 0).all() and grad.abs().sum() > 0
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())  # weights untouched

    plain.load_state_dict(saved)
    model.eval()
    assert torch.allclose(model(x)[0], plain(x)[0])  # no mask at evaluation


def test_weight_drop_trains_through_the_cli(repetitive_corpus, tmp_path):
    r = run_cli(
        "train", repetitive_corpus, *TINY, "--weight-drop", "0.25", "--steps", "150", "--out", tmp_path, "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = min(line["val_bpc"] for line in lines if line["val_bpc"] is not None)
    assert best < 0.25 * unigram_entropy(repetitive_corpus.read_text())
    info = run_cli("info", tmp_path)
    assert "weight drop 0.25" in info.stdout


@pytest.mark.parametrize("preset", ["auto", "small"])
def test_an_unknown_cell_is_one_line_error_before_any_training(preset, repetitive_corpus, tmp_path):
    r = run_cli("train", repetitive_corpus, "--preset", preset, "--model", "lstn", "--steps", "5", "--out", tmp_path)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    want = "error: unknown model 'lstn'; choose one of lstm, gru, rnn, peephole, cifg"
    assert r.stderr.strip().splitlines() == [want]
    assert not (tmp_path / "last.pt").exists()
