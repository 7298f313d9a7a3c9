"""The copy report: the longest span of a sample found verbatim in the training text and the
share of the sample inside spans of 50+ characters, against a brute-force count; the index built
once per run; `sample --json` reporting it and a plain sample warning past 200 characters."""

import json
import random

import pytest
from conftest import TINY, run_cli

from charrnn.data.vocab import CharVocab
from charrnn.evaluation.copying import MIN_SPAN, TextIndex, run_index, training_bytes
from charrnn.model import checkpoint


def brute_force(sample: str, text: str) -> tuple[int, float]:
    """The longest match at every position by substring search, and the covered share."""
    spans = []
    for i in range(len(sample)):
        n = 0
        while i + n < len(sample) and sample[i : i + n + 1] in text:
            n += 1
        spans.append(n)
    covered = [False] * len(sample)
    for i, n in enumerate(spans):
        if n >= MIN_SPAN:
            covered[i : i + n] = [True] * n
    return max(spans), sum(covered) / len(sample)


@pytest.mark.parametrize("alphabet", ["ab\n", "abcdé \n", "the quick brown fox ï\n"])
def test_longest_span_and_coverage_agree_with_brute_force(alphabet):
    rng = random.Random(len(alphabet))
    text = "".join(rng.choice(alphabet) for _ in range(4000))
    index = TextIndex.build(text.encode())
    for _ in range(5):
        start = rng.randrange(len(text) - 200)
        # A sample that mixes a copied passage with new text, so spans start and end inside it.
        sample = "".join(rng.choice(alphabet) for _ in range(40)) + text[start : start + 120] + "zz"
        found = index.copying(sample)
        assert (found.longest, round(found.covered, 6)) == tuple(round(v, 6) for v in brute_force(sample, text))


def test_a_sample_wholly_from_the_text_is_all_copied():
    text = "INT. KITCHEN - NIGHT\nANNA pours the tea. Outside, the sea is dark.\n" * 10
    index = TextIndex.build(text.encode())
    copied = index.copying(text[5:300])
    assert copied.longest == 295 and copied.covered == 1.0
    assert index.copying("").longest == 0


def test_training_bytes_decode_every_token_of_a_vocabulary():
    vocab = CharVocab("\n abcé")
    text = "abc é\nbéa"
    assert training_bytes(vocab.encode(text), vocab) == text.encode()


def test_sample_json_reports_copying_and_a_plain_sample_warns(tmp_path):
    # A text that is one sentence over and over: a model that learnt it repeats it, all copied.
    corpus = tmp_path / "cycle.txt"
    corpus.write_text("the sea is dark and the lamp is open.\n" * 200)
    out = tmp_path / "run"
    r = run_cli("train", corpus, *TINY, "--steps", "150", "--eval-every", "50", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    r = run_cli("sample", out, "--length", "400", "--seed", "1", "--temp", "0.3", "--json", "--num-samples", "2")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert all(set(row) == {"sample", "text", "longest_copied", "copied_fraction"} for row in rows)
    text = corpus.read_text()
    assert all((row["longest_copied"], row["copied_fraction"]) == (400, 1.0) for row in rows)
    assert all(brute_force(row["text"], text)[0] == 400 for row in rows)
    assert list((out / ".cache").glob("*.suffixes.npy")), "the index is kept beside the corpus cache"
    r = run_cli("sample", out, "--length", "400", "--seed", "1", "--temp", "0.3")
    assert r.exit_code == 0 and "warning: this sample repeats 400 characters" in r.stderr
    assert "warning" not in r.stdout


def test_the_report_counts_what_the_sample_shares_with_the_training_text(trained_run, repetitive_corpus):
    r = run_cli("sample", trained_run, "--length", "300", "--seed", "2", "--json", "--num-samples", "3")
    text = repetitive_corpus.read_text()
    for row in map(json.loads, r.stdout.splitlines()):
        longest, covered = brute_force(row["text"], text)
        assert (row["longest_copied"], row["copied_fraction"]) == (longest, round(covered, 4))
    index = run_index(checkpoint.load(trained_run))
    assert index is not None and index.text == text.encode()[: len(index.text)]


def test_no_report_without_the_training_text(trained_run, tmp_path):
    lone = tmp_path / "model.pt"
    lone.write_bytes((trained_run / "best.pt").read_bytes())
    r = run_cli("sample", lone, "--length", "50", "--seed", "1", "--json")
    row = json.loads(r.stdout)
    assert row["longest_copied"] is None and row["copied_fraction"] is None
