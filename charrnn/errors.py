"""One exception type for every problem caused by the user's input.

The CLI turns it into a one-line ``error: ...`` and exit code 2; anything else is a bug and
keeps its traceback.
"""


class CharrnnError(Exception):
    """Bad input (corpus, checkpoint, option) explained in one line for the user."""
