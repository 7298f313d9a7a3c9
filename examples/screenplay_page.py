"""A picture of a typeset screenplay page written by a model: sample, typeset to PDF, render a PNG.

    python examples/screenplay_page.py checkpoints/demo -o page.png --seed 0

Samples a scene (primed with a scene heading), typesets it as a screenplay PDF (the screenplay
extra: `pip install -e '.[screenplay]'` in the checkout) and, where poppler's `pdftoppm` is on
the PATH (Debian: `apt-get install poppler-utils`), renders its first page as a PNG. Run it again
after the model changes to regenerate the picture; the same model and seed give the same page.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import charrnn
from charrnn.screenplay.typeset import render


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default="checkpoints/demo", help="checkpoint or run directory")
    p.add_argument("-o", "--out", default="page.png", help="the PNG to write (the PDF goes beside it)")
    p.add_argument("--prime", default="INT. ", help="the text the scene starts from")
    p.add_argument("--length", type=int, default=2500, help="characters to sample (about one page)")
    p.add_argument("--temp", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None, help="a title page first")
    p.add_argument("--dpi", type=int, default=80)
    args = p.parse_args()

    model = charrnn.load(args.checkpoint)
    scene = args.prime + model.generate(args.prime, length=args.length, temp=args.temp, seed=args.seed)
    png = Path(args.out)
    pdf = png.with_suffix(".pdf")
    pdf.write_bytes(render(scene, "pdf", title=args.title))
    print(f"wrote {pdf}", file=sys.stderr)
    if shutil.which("pdftoppm") is None:
        print("pdftoppm not found (poppler-utils): no PNG; the PDF is the page", file=sys.stderr)
        return 0
    page = 2 if args.title else 1  # the first page of the scene, after any title page
    with tempfile.TemporaryDirectory() as tmp:
        stem = Path(tmp) / "page"
        subprocess.run(
            ["pdftoppm", "-png", "-r", str(args.dpi), "-f", str(page), "-l", str(page), "-singlefile", pdf, stem],
            check=True,
        )
        shutil.move(str(stem.with_suffix(".png")), png)
    print(f"wrote {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
