"""Seeded outputs of every user-facing path, written once and checked later: a refactoring that
claims to change no behaviour proves it here, byte for byte.

    python bench/golden.py --write bench/golden-zen3.json   # before the change
    python bench/golden.py --check bench/golden-zen3.json   # after it: exit 1 on any difference

Floating-point results depend on the CPU's kernels (AVX2, AVX-512, AMX) and on torch's version,
so a file is checked only on the CPU capability and torch it was written with. Everything runs
through the installed ``charrnn``: the command line in subprocesses, a real server on
127.0.0.1, and the Python API.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.resources import files
from pathlib import Path

import torch

SEEDS = (1, 2, 3, 7, 42, 1337)
TEMPS = ("0.5", "0.8", "1.2")
# Three small models, 50 float32 steps each on a few bundled screenplays.
MODELS = {
    "lstm": ["--model", "lstm", "--layers", "2", "--hidden", "64", "--embed", "32"],
    "gru": ["--model", "gru", "--layers", "2", "--hidden", "64", "--embed", "32"],
    "subword": [
        "--model",
        "lstm",
        "--layers",
        "1",
        "--hidden",
        "64",
        "--embed",
        "32",
        "--vocab",
        "bpe",
        "--vocab-size",
        "500",
    ],
}
COMMON = [
    "--preset",
    "tiny",
    "--seq-len",
    "32",
    "--batch-size",
    "16",
    "--steps",
    "50",
    "--eval-every",
    "25",
    "--seed",
    "5",
    "--precision",
    "float32",
    "--device",
    "cpu",
    "--quiet",
]


def cli(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "charrnn", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"charrnn {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def texts_of(json_lines: str) -> str:
    """JSON lines with only the fields the golden file was written with (2.0's copy report adds
    longest_copied and copied_fraction, which say nothing about the seeded text)."""
    rows = (json.loads(line) for line in json_lines.splitlines())
    return "".join(json.dumps({k: row[k] for k in ("sample", "text")}) + "\n" for row in rows)


def train_all(corpus: list[str], root: Path) -> dict[str, dict]:
    out = {}
    for name, flags in MODELS.items():
        run = root / name
        cli("train", *corpus, *flags, *COMMON, "--out", str(run))
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        out[name] = {
            "metrics": [{k: v for k, v in m.items() if k in ("step", "train_bpc", "val_bpc", "lr")} for m in lines]
        }
    return out


def samples(root: Path) -> dict[str, str]:
    out = {}
    for name in MODELS:
        run = str(root / name)
        for seed in SEEDS:
            for temp in TEMPS:
                out[f"{name} seed {seed} temp {temp}"] = cli(
                    "sample", run, "--length", "200", "--seed", str(seed), "--temp", temp, "--prime", "INT. "
                )
        out[f"{name} top-k"] = cli("sample", run, "--length", "150", "--seed", "3", "--top-k", "5")
        out[f"{name} top-p"] = cli("sample", run, "--length", "150", "--seed", "3", "--top-p", "0.9")
        out[f"{name} batch"] = texts_of(
            cli("sample", run, "--length", "120", "--seed", "4", "--num-samples", "3", "--json")
        )
        out[f"{name} beam"] = cli("sample", run, "--length", "60", "--beam-width", "4", "--prime", "THE")
        out[f"{name} greedy"] = cli("sample", run, "--length", "80", "--greedy")
        out[f"{name} stop"] = cli("sample", run, "--length", "300", "--seed", "9", "--stop", "\\n\\n")
    return out


def api(root: Path, text: str) -> dict:
    import charrnn

    out: dict = {}
    for name in MODELS:
        m = charrnn.load(root / name)
        out[f"{name} generate"] = m.generate("INT. ", length=150, temp=0.9, seed=11)
        out[f"{name} generate top-k stop"] = m.generate("", length=200, top_k=8, stop="\n\n", seed=12)
        out[f"{name} generate_many"] = m.generate_many(3, "EXT. ", length=100, top_p=0.95, seed=13)
        s = m.score(text)
        out[f"{name} score"] = [s.bpc, s.bits_per_token, s.perplexity]
    return out


def evaluations(root: Path, text_file: Path) -> dict:
    out = {}
    for name in MODELS:
        for flags in ([], ["--dynamic"]):
            scores = json.loads(cli("eval", str(root / name), str(text_file), "--json", *flags))
            # Timings are not outputs.
            out[" ".join([name, "eval", *flags])] = {k: v for k, v in scores.items() if not k.endswith("_seconds")}
    return out


def post(url: str, body: dict) -> str:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read().decode()


def served(root: Path) -> dict:
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "serve", *(str(root / n) for n in MODELS), "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"charrnn serve: (http://\S+)", line)
            url = found.group(1) if found else url
        if url is None:
            raise SystemExit("the server did not start")
        out = {}
        for name in MODELS:
            base = {"model": name, "prompt": "INT. ", "max_tokens": 80, "seed": 21}
            body = json.loads(post(url + "/v1/completions", {**base, "n": 3, "temperature": 0.7}))
            out[f"{name} completions"] = [c["text"] for c in body["choices"]]
            stream = post(url + "/v1/completions", {**base, "stream": True, "top_p": 0.9})
            out[f"{name} stream"] = "".join(
                json.loads(e)["choices"][0]["text"] for e in re.findall(r"^data: (\{.*)$", stream, re.M)
            )
            two = json.loads(
                post(url + "/v1/completions", {**base, "prompt": ["INT. ", "EXT. "], "echo": True, "top_k": 6})
            )
            out[f"{name} two prompts"] = [c["text"] for c in two["choices"]]
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def collect() -> dict:
    demo = sorted(str(p) for p in Path(str(files("charrnn").joinpath("demo"))).glob("*.fountain"))
    corpus = demo[:6]
    known = set("".join(Path(p).read_text(encoding="utf-8") for p in corpus))
    # Held-out text in the models' characters: a screenplay the models did not read.
    held = "".join(c for c in Path(demo[-1]).read_text(encoding="utf-8") if c in known)[:3000]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "held.txt").write_text(held, encoding="utf-8")
        result = {
            "train": train_all(corpus, root),
            "sample": samples(root),
            "api": api(root, held),
            "eval": evaluations(root, root / "held.txt"),
            "serve": served(root),
        }
    return result


def machine() -> dict:
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path)
    mode.add_argument("--check", type=Path)
    a = parser.parse_args()
    if a.write:
        a.write.write_text(json.dumps({"machine": machine(), "outputs": collect()}, indent=1, sort_keys=True) + "\n")
        print(json.dumps({"bench": "golden", "wrote": str(a.write)}))
        return
    saved = json.loads(a.check.read_text())
    if saved["machine"] != machine():
        raise SystemExit(f"written on {saved['machine']}, this is {machine()}: not comparable")
    now, then = collect(), saved["outputs"]
    diffs = [f"{part}: {key}" for part in then for key in then[part] if now.get(part, {}).get(key) != then[part][key]]
    diffs += [f"{part}: {key} (new)" for part in now for key in now[part] if key not in then.get(part, {})]
    print(json.dumps({"bench": "golden", "checked": sum(len(v) for v in then.values()), "differ": diffs}))
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
