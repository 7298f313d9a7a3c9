"""The playground page ``charrnn serve`` answers at ``/``: one self-contained HTML file that
streams from ``/v1/completions`` and fetches nothing else, so it works on a machine with no
network and shows only what the server sends."""

from importlib.resources import files

# The page lives beside this module as a plain HTML file (package data), read once on import.
PAGE = files("charrnn.serving").joinpath("playground.html").read_text(encoding="utf-8")
