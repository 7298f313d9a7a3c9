"""Sample text from a model exported with `charrnn export`, with nothing but numpy and onnxruntime.

    python examples/onnx_sample.py model.onnx --prime "ROMEO:" --length 300 --temp 0.8 --seed 1

Everything the graph does not hold travels in its metadata: each token's UTF-8 bytes (to turn
ids back into text), the characters of a character vocabulary (to turn a prime into ids) and
the model settings (the state's shape). A subword model's prime needs SentencePiece, whose
model is in the metadata too; without a prime it samples from a newline, or from id 0.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import json
import sys

import numpy as np
import onnxruntime as ort


def load(path: str) -> tuple[ort.InferenceSession, dict[str, str]]:
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if "charrnn.token_bytes" not in meta:
        sys.exit(f"error: {path} was not exported by charrnn (no charrnn.token_bytes in its metadata)")
    return session, meta


def encode(meta: dict[str, str], text: str) -> list[int]:
    """The prime as ids: one per character, or SentencePiece's pieces for a subword model."""
    if meta["charrnn.vocab_kind"] == "char":
        index = {ch: i for i, ch in enumerate(meta["charrnn.chars"])}
        missing = sorted(set(text) - set(index))
        if missing:
            sys.exit(f"error: the prime has characters the vocabulary lacks: {missing}")
        return [index[ch] for ch in text]
    try:
        import sentencepiece
    except ImportError:
        sys.exit("error: priming a subword model needs sentencepiece (pip install sentencepiece)")
    sp = sentencepiece.SentencePieceProcessor(model_proto=base64.b64decode(meta["charrnn.sentencepiece_model"]))
    return sp.encode(text)


def sample(session: ort.InferenceSession, meta: dict[str, str], prime: str, length: int, temp: float, seed: int | None):
    """Yield the text piece by piece: the prime is read in one call, then one call per token."""
    config = json.loads(meta["charrnn.model_config"])
    pieces = [base64.b64decode(p) for p in json.loads(meta["charrnn.token_bytes"])]
    newline = pieces.index(b"\n") if b"\n" in pieces else 0
    ids = encode(meta, prime) or [newline]
    shape = (config["layers"], 1, config["hidden"])
    state = {name: np.zeros(shape, dtype=np.float32) for name in meta["charrnn.state"].split(",")}
    rng = np.random.default_rng(seed)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    tokens = np.array([ids], dtype=np.int64)
    written = 0
    while written < length:
        logits, *new_state = session.run(None, {"ids": tokens, **state})
        state = dict(zip(state, new_state))
        z = logits[0, -1].astype(np.float64) / temp
        p = np.exp(z - z.max())
        token = int(rng.choice(len(p), p=p / p.sum()))
        text = decoder.decode(pieces[token])[: length - written]
        written += len(text)
        yield text
        tokens = np.array([[token]], dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="an .onnx file written by charrnn export")
    ap.add_argument("--prime", default="", help="text the sample continues (printed first)")
    ap.add_argument("--length", type=int, default=500, help="characters to generate")
    ap.add_argument("--temp", type=float, default=0.8, help="temperature (> 0)")
    ap.add_argument("--seed", type=int, default=None, help="seed for a reproducible sample")
    args = ap.parse_args()
    if not args.temp > 0:
        sys.exit(f"error: --temp must be > 0 (got {args.temp})")
    session, meta = load(args.model)
    sys.stdout.write(args.prime)
    for text in sample(session, meta, args.prime, args.length, args.temp, args.seed):
        sys.stdout.write(text)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
