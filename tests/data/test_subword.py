"""Subword vocabularies, streaming preparation and bits per character across vocabularies."""

import io
import json

import numpy as np
import pytest
from conftest import TINY, run_cli, shared

from charrnn.data import corpus
from charrnn.data import prepare as data
from charrnn.data.prepare import VocabSpec, prepare, split_point
from charrnn.data.vocab import SubwordVocab
from charrnn.errors import CharrnnError

SHARED_NAMES = ["tinyshakespeare.txt", "earnest.txt", "quijote_es.txt", "warpeace.txt", "stacks_algebra.tex"]


def _sample_file(tmp_path, name: str, size: int = 150_000):
    """The head of a shared corpus, cut at a line end, written as-is (BOM and CRLF kept)."""
    raw = shared(name).read_bytes()[:size]
    raw = raw[: raw.rfind(b"\n") + 1]
    path = tmp_path / name
    path.write_bytes(raw)
    return path, corpus.decode(raw, name)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
@pytest.mark.parametrize("name", SHARED_NAMES)
def test_subword_round_trips_every_shared_corpus(tmp_path, monkeypatch, name, kind):
    path, text = _sample_file(tmp_path, name)
    # Small chunks and pieces, so chunk, piece and split boundaries all fall inside the text.
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 4099)
    monkeypatch.setattr(data, "_PIECE_CHARS", 1000)
    prepared = prepare([str(path)], None, 0.1, VocabSpec(kind, 400), keep_gutenberg=True)  # the file as it is
    vocab = prepared.vocab
    cut = split_point(len(text), 0.1)
    assert vocab.decode(prepared.train) == text[:cut]
    assert vocab.decode(prepared.val) == text[cut:]
    assert (prepared.train_chars, prepared.val_chars) == (cut, len(text) - cut)
    # Chunked reading gives the very ids of encoding each split in one go.
    assert np.array_equal(prepared.train, data.encode_text(vocab, text[:cut]))
    if kind == "bpe":  # BPE has no ties to break: even one unbroken encode agrees
        assert np.array_equal(prepared.train, vocab.encode(text[:cut]))
    assert len(prepared.train) < 0.85 * cut, "subwords should be shorter than characters"
    assert vocab.count_chars(prepared.val) == len(text) - cut


def test_subword_keeps_whitespace_and_unseen_characters():
    lines = ["INT. KITCHEN - NIGHT", "", "          MARA", "    (quietly)", "Pass the salt."] * 400
    vocab = SubwordVocab.train("bpe", 320, iter(lines), 40)
    tricky = "   \n\n\tINT.  HOUSE\n        日本語 and ñ, 🎬!\n\n\n"
    ids = vocab.encode(tricky)
    assert vocab.decode(ids) == tricky
    assert vocab.count_chars(ids) == len(tricky)
    assert b"".join(vocab.token_bytes()[i] for i in ids).decode() == tricky


def test_subword_vocab_size_errors(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a small corpus of words and words\n" * 50)
    with pytest.raises(CharrnnError, match="--vocab-size 100000 does not suit this corpus"):
        prepare([str(path)], None, 0.1, VocabSpec("bpe", 100000))
    with pytest.raises(CharrnnError, match="too small"):
        prepare([str(path)], None, 0.1, VocabSpec("bpe", 50))
    with pytest.raises(CharrnnError, match="--vocab must be one of"):
        VocabSpec("words")


def test_stream_reader_matches_whole_decode_at_any_chunk_size():
    raw = "\ufeffa\r\nb\rc\r\nñ日本\r".encode() + "x🎬y\r\n\r\n".encode()
    whole = corpus.decode(raw, "f")
    assert whole == "a\nb\nc\nñ日本\nx🎬y\n\n"
    for size in range(1, 9):
        got = "".join(t for t, _ in corpus.iter_text(io.BytesIO(raw), "f", size))
        assert got == whole, size


def test_invalid_utf8_offset_across_chunks():
    raw = ("é" * 10).encode() + b"\xff" + b"tail"
    for size in (1, 3, 7, 64):
        with pytest.raises(CharrnnError, match=r"offset 20\)"):
            "".join(t for t, _ in corpus.iter_text(io.BytesIO(raw), "f", size))


def test_file_list_with_mid_bom_mixed_endings_and_one_bad_file(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 5)
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_bytes(b"first line\r\nsecond\r")
    b.write_bytes("\ufeff".encode() + b"third\nfourth\r\n" * 30)
    prepared = prepare([str(a), str(b)], None, 0.2)
    text = prepared.vocab.decode(np.concatenate([prepared.train, prepared.val]))
    assert text == "first line\nsecond\n" + "third\nfourth\n" * 30
    c.write_bytes(b"fine\n\xc3(bad")
    with pytest.raises(CharrnnError, match=r"c\.txt: not valid UTF-8 \(invalid byte at offset 5\)"):
        prepare([str(a), str(b), str(c)], None, 0.1)


def test_cache_key_covers_vocabulary_and_reuses_memmap(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("the cat sat on the mat; the dog sat on the log.\n" * 200)
    cache = tmp_path / "cache"
    char = prepare([str(path)], cache, 0.1)
    bpe = prepare([str(path)], cache, 0.1, VocabSpec("bpe", 300))
    assert char.key != bpe.key and bpe.vocab.kind == "bpe" and char.vocab.kind == "char"
    again = prepare([str(path)], cache, 0.1, VocabSpec("bpe", 300))
    assert again.key == bpe.key and isinstance(again.train, np.memmap)
    assert again.vocab.to_state() == bpe.vocab.to_state()
    assert np.array_equal(np.asarray(again.val), np.asarray(bpe.val))


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_subword_train_sample_eval_end_to_end(tmp_path, repetitive_corpus, kind):
    out = tmp_path / "run"
    # 120 steps is far shorter than a real run: a floor of lr/10 keeps it learning to the end.
    # float32, as eval scores (an AMX CPU would validate in bfloat16: ~1e-4 bpc apart here).
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--vocab",
        kind,
        "--vocab-size",
        "285",
        "--steps",
        "120",
        "--min-lr",
        "1e-3",
        "--eval-every",
        "40",
        "--precision",
        "float32",
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [line["val_bpc"] for line in lines if line["val_bpc"] is not None]
    assert vals[-1] < 0.65 * vals[0]
    # eval on the validation text gives the trainer's own val bpc for the final weights
    text = repetitive_corpus.read_text()
    val = tmp_path / "val.txt"
    val.write_text(text[split_point(len(text), 0.1) :])
    r = run_cli("eval", out / "last.pt", val, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert abs(result["bpc"] - vals[-1]) < 1e-4
    assert result["tokens"] < result["chars"] and result["bits_per_token"] > result["bpc"]
    # samples stream characters; --length counts characters, the prime uses the model's vocabulary
    r = run_cli("sample", out / "last.pt", "--length", "157", "--seed", "3", "--prime", "ANNA: the")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("ANNA: the") and len(r.stdout) == len("ANNA: the") + 157 + 1
    again = run_cli("sample", out / "last.pt", "--length", "157", "--seed", "3", "--prime", "ANNA: the")
    assert again.stdout == r.stdout
    r = run_cli("info", out / "last.pt")
    assert f"{kind}, 285 tokens" in r.stdout


def test_init_from_reencodes_with_checkpoint_vocabulary(tmp_path, repetitive_corpus):
    out = tmp_path / "run"
    assert (
        run_cli(
            "train",
            repetitive_corpus,
            *TINY,
            "--vocab",
            "bpe",
            "--vocab-size",
            "300",
            "--steps",
            "5",
            "--out",
            out,
            "--quiet",
        ).exit_code
        == 0
    )
    other = tmp_path / "other.txt"
    other.write_text("DORA: the window is wide open, and new words arrive.\n" * 60)
    r = run_cli(
        "train", other, *TINY, "--steps", "5", "--init-from", out / "last.pt", "--out", tmp_path / "ft", "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    r = run_cli("info", tmp_path / "ft" / "last.pt")
    assert "bpe, 300 tokens" in r.stdout
