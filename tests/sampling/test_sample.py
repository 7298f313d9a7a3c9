import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import run_cli

from charrnn.data.vocab import CharVocab
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.stepper import Stepper
from charrnn.runtime import kernels
from charrnn.sampling.beam import beam_search
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowFilters, filter_logits, pick


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole", "cifg"])
@pytest.mark.parametrize("layers", [1, 3])
def test_step_matches_full_sequence_forward(cell, layers):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=30, model=cell, layers=layers, hidden=24, embed=12, dropout=0.3)).eval()
    x = torch.randint(0, 30, (2, 20))
    full, _ = model(x)
    stepper = Stepper(model)
    state = model.init_state(2)
    for t in range(20):
        logits, state = stepper.step(x[:, t], state)
        assert torch.allclose(logits, full[:, t], atol=1e-5), (cell, layers, t)


def _toy_logits():
    return torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])


def test_top_k_never_leaves_the_k_most_likely():
    g = torch.Generator().manual_seed(0)
    opts = SampleOptions(temp=5.0, top_k=2)
    seen = {int(pick(_toy_logits(), opts, g)) for _ in range(500)}
    assert seen == {0, 1}


def test_top_p_never_leaves_the_nucleus():
    probs = _toy_logits().softmax(-1)[0]
    # nucleus for 0.7: the smallest prefix of tokens (by probability) whose mass reaches 0.7
    order = probs.argsort(descending=True)
    mass, nucleus = 0.0, set()
    for i in order.tolist():
        nucleus.add(i)
        mass += float(probs[i])
        if mass >= 0.7:
            break
    g = torch.Generator().manual_seed(0)
    seen = {int(pick(_toy_logits(), SampleOptions(temp=1.0, top_p=0.7), g)) for _ in range(2000)}
    assert seen == nucleus
    kept = torch.isfinite(filter_logits(_toy_logits(), RowFilters.of([SampleOptions(temp=1.0, top_p=1.0)], 6)))
    assert kept.all()


def test_low_temperature_tends_to_argmax():
    g = torch.Generator().manual_seed(0)
    picks = [int(pick(torch.tensor([[1.0, 0.9, 0.5]]), SampleOptions(temp=0.01), g)) for _ in range(300)]
    assert set(picks) == {0}


def test_empirical_frequencies_match_softmax_chi_square():
    logits = _toy_logits()
    n = 20000
    g = torch.Generator().manual_seed(123)
    draws = pick(logits.expand(n, -1), SampleOptions(temp=1.3), g)
    counts = np.bincount(draws.numpy(), minlength=6)
    expected = (logits / 1.3).softmax(-1)[0].double().numpy() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 5 degrees of freedom, p = 0.001


def _tiny_model():
    torch.manual_seed(1)
    vocab = CharVocab.build("abcdefgh \n")
    return CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=16, embed=8, dropout=0.0)).eval(), vocab


def test_beam_is_at_least_as_likely_as_greedy():
    model, vocab = _tiny_model()
    prime = vocab.encode("ab").tolist()
    text, score = beam_search(model, vocab, prime, width=5, length=30)
    greedy = "".join(p for _, p in generate(model, vocab, SampleOptions(length=30, greedy=True), prime))
    ids = vocab.encode("ab" + greedy).astype(np.int64)
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(ids)[None])
    logp = logits[0, 1:-1].log_softmax(-1).gather(1, torch.from_numpy(ids[2:])[:, None]).sum()
    assert len(text) == 30 and score >= float(logp) - 1e-6


def test_batched_samples_reproducible_with_seed(trained_run):
    a = run_cli("sample", trained_run, "--num-samples", "4", "--length", "50", "--seed", "3", "--json")
    b = run_cli("sample", trained_run, "--num-samples", "4", "--length", "50", "--seed", "3", "--json")
    assert a.exit_code == 0 and a.stdout == b.stdout
    rows = [json.loads(line) for line in a.stdout.splitlines()]
    assert len(rows) == 4 and all(len(r["text"]) == 50 for r in rows)
    assert len({r["text"] for r in rows}) > 1


def test_seeded_sample_identical_and_stdout_only_text(trained_run):
    a = run_cli("sample", trained_run, "--length", "200", "--seed", "5", "--prime", "ANNA")
    b = run_cli("sample", trained_run, "--length", "200", "--seed", "5", "--prime", "ANNA")
    assert a.exit_code == 0 and a.stdout == b.stdout and a.stderr == ""
    assert a.stdout.startswith("ANNA") and len(a.stdout) == len("ANNA") + 200 + 1


def test_a_tiny_temperature_samples_greedily(trained_run):
    greedy = run_cli("sample", trained_run, "--length", "80", "--greedy", "--prime", "ANNA")
    tiny = run_cli("sample", trained_run, "--length", "80", "--temp", "1e-40", "--seed", "4", "--prime", "ANNA")
    assert tiny.exit_code == 0 and tiny.stdout == greedy.stdout and tiny.stdout.strip() != "ANNA"


def test_sample_learned_the_corpus(trained_run):
    r = run_cli("sample", trained_run, "--length", "300", "--temp", "0.3", "--seed", "1")
    words = r.stdout.split()
    known = {"ANNA:", "BORIS:", "CLARA:", "the", "sea", "lamp", "door", "is", "open.", "dark."}
    assert sum(w in known for w in words) > 0.7 * len(words)


def test_stop_string_from_cli(trained_run):
    r = run_cli("sample", trained_run, "--length", "2000", "--seed", "2", "--stop", "BORIS", "--temp", "0.5")
    assert r.exit_code == 0 and "BORIS" not in r.stdout and len(r.stdout) < 2000


def test_prime_unknown_characters(trained_run):
    r = run_cli("sample", trained_run, "--prime", "ANNA ☃", "--length", "5")
    assert r.exit_code == 2 and "'☃'" in r.stderr
    r = run_cli("sample", trained_run, "--prime", "ANNA ☃", "--length", "5", "--unknown", "skip")
    assert r.exit_code == 0 and r.stdout.startswith("ANNA ")


@pytest.mark.parametrize("flag", [["--temp", "-1"], ["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "0"]])
def test_out_of_range_flags(trained_run, flag):
    r = run_cli("sample", trained_run, *flag)
    assert r.exit_code == 2 and r.stderr.startswith("error: ")


def test_closed_pipe_ends_quietly(trained_run):
    p = subprocess.run(
        f"{sys.executable} -m charrnn sample {trained_run} --length 200000 | head -c 10",
        shell=True,
        capture_output=True,
        executable="/bin/bash",
    )
    assert p.returncode == 0 and len(p.stdout) == 10 and p.stderr == b""
    p = subprocess.run(
        f"set -o pipefail; {sys.executable} -m charrnn sample {trained_run} --length 200000 | head -3",
        shell=True,
        capture_output=True,
        executable="/bin/bash",
    )
    assert p.returncode == 0 and p.stderr == b""


def test_a_callers_torch_set_num_threads_does_not_stall_one_row_sampling():
    """After ``torch.set_num_threads`` MKL ran every one-row tanh on a team of all threads, which
    waited on numpy's spinning OpenBLAS threads: a 2x512 LSTM sampled 48 chars/s instead of
    ~6,500 on a 2-core Zen 5 EPYC. ``generate`` lets MKL choose its threads again."""
    torch.manual_seed(0)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=512, embed=64, dropout=0.0)).eval()
    opts = SampleOptions(length=300, seed=1, precision="float32")

    def seconds() -> float:
        start = time.perf_counter()
        text = "".join(piece for _, piece in generate(model, vocab, opts, [0]))
        assert len(text) == 300
        return time.perf_counter() - start

    seconds()
    before = min(seconds() for _ in range(2))
    try:
        torch.set_num_threads(torch.get_num_threads())
        after = min(seconds() for _ in range(2))
        chooses = kernels.mkl_chooses_threads()
    finally:
        kernels.let_mkl_choose_threads()
    assert chooses in (True, None), "MKL left without its choice of threads after generate"
    assert after < 3 * before + 0.05, f"{after:.3f} s after torch.set_num_threads against {before:.3f} s"
