import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli, run_proc, shared

from charrnn.data import corpus
from charrnn.data.vocab import CharVocab
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint


def test_decode_drops_bom_and_normalises_line_endings():
    assert corpus.decode("\ufeffa\r\nb\rc\n".encode(), "f") == "a\nb\nc\n"


def test_invalid_utf8_names_file_and_offset():
    with pytest.raises(CharrnnError, match=r"bad\.txt: not valid UTF-8 \(invalid byte at offset 3\)"):
        corpus.decode(b"abc\xff def", "bad.txt")


def test_binary_file_is_refused():
    with pytest.raises(CharrnnError, match="binary"):
        corpus.decode(b"PK\x03\x04\x00\x00", "x.zip")


def test_directory_is_read_sorted_and_hidden_files_skipped(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.txt").write_text("ay")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("sea")
    (tmp_path / ".hidden").write_text("no")
    files = corpus.resolve([str(tmp_path)])
    assert [Path(f).name for f in files] == ["a.txt", "b.txt", "c.txt"]
    assert corpus.read_text(corpus.open_sources([str(tmp_path)])) == "aybeesea"


def test_files_in_a_folder_that_are_not_text_are_left_out(tmp_path):
    (tmp_path / "a.py").write_text("print('hi')\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\xa7\r\r\n\x00\x00\x00\x00code")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    # A character cut in two by the 8000-byte sniff is still UTF-8 text.
    (tmp_path / "long.txt").write_bytes(b"x" * (corpus.SNIFF_BYTES - 1) + "\u00e9\n".encode())
    # ... but a short file whose last character is cut at its end is not.
    (tmp_path / "cut.txt").write_bytes(b"hello caf\xc3")
    skipped: list[str] = []
    files = corpus.resolve([str(tmp_path)], skipped)
    assert [Path(f).name for f in files] == ["a.py", "long.txt"]
    assert sorted(Path(f).name for f in skipped) == ["a.cpython-311.pyc", "cut.txt", "latin1.txt"]
    # Named on its own, a binary file is read, and refused with the reason.
    with pytest.raises(CharrnnError, match="binary"):
        corpus.read_text(corpus.open_sources([str(tmp_path / "__pycache__" / "a.cpython-311.pyc")]))
    with pytest.raises(CharrnnError, match=r"__pycache__: directory holds no text files \(1 not UTF-8 text\)"):
        corpus.resolve([str(tmp_path / "__pycache__")])


def test_training_on_a_source_tree_notes_the_files_left_out(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    for i in range(3):
        (src / "pkg" / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i}\n" * 40)
        (src / "pkg" / "__pycache__" / f"m{i}.pyc").write_bytes(b"\x00" * 64)
    (src / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    out = tmp_path / "out"
    r = run_cli("train", src, *TINY, "--steps", "3", "--out", out)
    assert r.exit_code == 0, r.stderr
    note = next(line for line in r.stderr.splitlines() if line.startswith("note: left out"))
    assert note == f"note: left out 4 file(s) that are not UTF-8 text: 3 in {src / 'pkg' / '__pycache__'}, 1 in {src}"
    r = run_cli("eval", out, src)
    assert r.exit_code == 0 and "note: left out 4 file(s)" in r.stderr and "bpc" in r.stdout


def test_a_run_on_more_than_a_hundred_files_resumes(tmp_path):
    """The checkpoint shows the first 100 file names; resume reads the corpus as it was given."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(120):
        (src / f"m{i:03}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 4)
    out = tmp_path / "out"
    r = run_cli("train", src, *TINY, "--steps", "2", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    assert len(checkpoint.load(out / "last.pt")["corpus"]["files"]) == 100
    r = run_cli("train", "--resume", out, "--steps", "4", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(out / "last.pt")["step"] == 4
    # a run saved before the paths were kept cannot know the rest of its files: it says so
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["corpus"]["paths"]
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, out / "last.pt")
    r = run_cli("train", "--resume", out, "--steps", "6", "--quiet")
    assert r.exit_code == 2 and "give the corpus again" in r.stderr
    assert run_cli("train", src, "--resume", "--out", out, "--steps", "6", "--quiet").exit_code == 0


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "corpus is empty"),
        (b"\n \n", "corpus is empty"),
        (b"caf\xc3", "not valid UTF-8 (invalid byte at offset 3)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
        (b"short text", "too short"),
    ],
)
def test_bad_corpus_is_one_line_error_and_writes_nothing(tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    out = tmp_path / "out"
    r = run_cli("train", bad, *TINY, "--seq-len", "64", "--steps", "5", "--out", out, "--quiet")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and "bad.txt" in r.stderr
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


def test_missing_file_and_bad_flag_through_real_entry_point(tmp_path):
    r = run_proc("train", tmp_path / "nope.txt", "--steps", "1")
    assert r.returncode == 2 and r.stderr.decode().startswith("error: ") and b"Traceback" not in r.stderr
    assert b"nope.txt" in r.stderr and r.stdout == b""
    r = run_proc("sample", "--temp", "0")
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1 and b"--temp" in r.stderr
    r = run_proc("train", tmp_path / "nope.txt", "--layers", "0")
    assert r.returncode == 2 and r.stderr.decode().startswith("error: ") and r.stderr.decode().count("\n") == 1


def test_stdin_corpus(tmp_path):
    text = "to be or not to be, that is the question.\n" * 30
    r = run_cli("train", "-", *TINY, "--steps", "3", "--out", tmp_path / "o", "--quiet", input=text)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "o" / "best.pt").is_file()


@pytest.mark.parametrize(
    "name", ["tinyshakespeare.txt", "earnest.txt", "quijote_es.txt", "warpeace.txt", "stacks_algebra.tex"]
)
def test_char_vocab_round_trips_shared_corpora(name):
    data = shared(name).read_bytes()[:300_000]
    # cut at a character boundary
    text = data.decode("utf-8", errors="ignore")
    text = corpus.decode(text.encode(), name)
    vocab = CharVocab.build(text)
    ids = vocab.encode(text)
    assert ids.dtype == np.uint8 and vocab.decode(ids) == text
    assert "\r" not in text and not text.startswith("\ufeff")


def test_spanish_corpus_bom_crlf():
    text = corpus.decode(shared("quijote_es.txt").read_bytes(), "quijote")
    assert not text.startswith("\ufeff") and "\r" not in text and "ñ" in text


# A Project Gutenberg e-book as the site serves it (CRLF), with characters only the licence has.
PG_HEADER = (
    "\ufeffThe Project Gutenberg eBook of A Play\r\n\r\nThis eBook is for the use of anyone anywhere.\r\n\r\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK A PLAY ***\r\n\r\n\r\n"
)
PG_LICENCE = (
    "\r\n*** END OF THE PROJECT GUTENBERG EBOOK A PLAY ***\r\n\r\n"
    "Section 1. General Terms of Use \u00a7 Redistributing Project Gutenberg\u2122 electronic works\r\n"
)


def _ebook(play: str) -> bytes:
    return (PG_HEADER + play.replace("\n", "\r\n") + PG_LICENCE).encode()


@pytest.mark.parametrize("chunk_bytes", [5, 64, 1 << 20])
def test_a_gutenberg_ebook_is_read_without_its_header_and_licence(chunk_bytes):
    play = "ANNA: the sea is open.\nBORIS: the lamp is dark.\n" * 30
    raw = _ebook(play)
    left_out: list[int] = []
    chunks = list(corpus.without_gutenberg(corpus.iter_text(io.BytesIO(raw), "pg.txt", chunk_bytes), left_out))
    assert "".join(t for t, _ in chunks) == play + "\n"  # the blank line before the END line stays
    assert sum(n for _, n in chunks) == len(raw)  # every byte counted, for the progress bar
    assert left_out == [len(corpus.decode(raw, "pg.txt")) - len(play) - 1]


def test_a_gutenberg_ebook_of_one_endless_line_is_streamed_in_pieces():
    body = "la " * 100_000
    chunks = list(corpus.without_gutenberg(corpus.iter_text(io.BytesIO(_ebook(body)), "pg.txt", 4096), []))
    assert "".join(t for t, _ in chunks) == body + "\n"
    assert max(len(t) for t, _ in chunks) < 2 * corpus.GUTENBERG_HEADER_CHARS


@pytest.mark.parametrize(
    "text",
    [
        "ANNA: the sea is open.\n" * 20,
        # a START line deep in a text is something the text says, not a header
        "x\n" * 40_000
        + "*** START OF THE PROJECT GUTENBERG EBOOK X ***\nafter\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n",
    ],
)
def test_text_without_a_gutenberg_header_is_read_unchanged(text):
    left_out: list[int] = []
    chunks = corpus.without_gutenberg(corpus.iter_text(io.BytesIO(text.encode()), "t", 1000), left_out)
    assert "".join(t for t, _ in chunks) == text and left_out == []


def test_training_leaves_out_a_gutenberg_header_and_licence_unless_kept(tmp_path, repetitive_corpus):
    book = tmp_path / "pg99.txt"
    book.write_bytes(_ebook(repetitive_corpus.read_text()))
    r = run_cli("train", book, *TINY, "--steps", "4", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    assert "pg99.txt: training on the text only, without Project Gutenberg's header and licence" in r.stderr
    chars = checkpoint.load(tmp_path / "a" / "best.pt")["vocab"]["chars"]
    assert chars == "".join(sorted(set(repetitive_corpus.read_text())))
    # the same bytes by another name find the cache, and the note names them as given now
    r = run_cli("train", "-", *TINY, "--steps", "1", "--out", tmp_path / "a", input=book.read_bytes().decode())
    assert r.exit_code == 0 and "note: <stdin>: training on the text only" in r.stderr, r.stderr
    assert len(list((tmp_path / "a" / ".cache").glob("*/meta.json"))) == 1
    # a folder of books gets one line
    (tmp_path / "shelf").mkdir()
    for n in range(5):
        (tmp_path / "shelf" / f"pg{n}.txt").write_bytes(_ebook(repetitive_corpus.read_text()))
    r = run_cli("train", tmp_path / "shelf", *TINY, "--steps", "1", "--out", tmp_path / "c")
    assert r.exit_code == 0 and r.stderr.count("note:") == 1 and "5 books (" in r.stderr
    # eval reads the book the same way; the licence has characters the model has never seen
    assert run_cli("eval", tmp_path / "a", book).exit_code == 0
    r = run_cli("eval", tmp_path / "a", book, "--keep-gutenberg")
    assert r.exit_code == 2 and "vocabulary lacks" in r.stderr
    r = run_cli("train", book, *TINY, "--steps", "4", "--out", tmp_path / "b", "--keep-gutenberg")
    assert r.exit_code == 0 and "Project Gutenberg" not in r.stderr
    assert "\u00a7" in checkpoint.load(tmp_path / "b" / "best.pt")["vocab"]["chars"]
    # eval reads a book as its model was trained, unless told
    whole = len(corpus.decode(book.read_bytes(), "b"))
    r = run_cli("eval", tmp_path / "b", book, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["chars"] == whole - 1, r.stderr
    r = run_cli("eval", tmp_path / "b", book, "--json", "--no-keep-gutenberg")
    assert r.exit_code == 0 and json.loads(r.stdout)["chars"] == len(repetitive_corpus.read_text()), (
        r.stderr
    )  # the play and the blank line before END, less the first character
    # a run saved before the header was left out resumes on the text it was trained on
    ckpt = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    del ckpt["train_config"]["keep_gutenberg"]
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, tmp_path / "b" / "last.pt")
    r = run_cli("train", "--resume", tmp_path / "b", "--steps", "6", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert "\u00a7" in checkpoint.load(tmp_path / "b" / "last.pt")["vocab"]["chars"]
    # ... and eval reads a book whole for such a model, as it was trained
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, tmp_path / "old.pt")
    r = run_cli("eval", tmp_path / "old.pt", book, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["chars"] == whole - 1, r.stderr
