"""``charrnn train`` and ``charrnn sample`` are built from the library's option tables, and the
library reads a value as the command's parser does: the same values, the same messages."""

import math

import pytest
from typer.main import get_command

from charrnn.cli.app import app
from charrnn.errors import CharrnnError
from charrnn.sampling.options import SAMPLE_OPTIONS
from charrnn.training.config import PRESETS, TRAIN_OPTIONS

TABLES = [("train", TRAIN_OPTIONS), ("sample", SAMPLE_OPTIONS)]
TEXTS = [
    "-1",
    "0",
    "1",
    "3",
    "16",
    "17",
    "0.5",
    "0.95",
    "0.96",
    "5.0",
    "5.",
    "1e3",
    "1e308",
    "nan",
    "inf",
    "-inf",
    "99999999999999999999",
    "abc",
    "",
    " 7 ",
    "1_000",
    "+2",
    "0x10",
    "٣",
]


def params(command):
    return get_command(app).commands[command].params


@pytest.mark.parametrize("command, options", TABLES)
def test_the_commands_parameters_are_the_tables(command, options):
    found = params(command)
    assert [p.name for p in found] == list(options)
    for p, o in zip(found, options.values()):
        assert (p.help, p.default) == (o.help, o.default)
        assert (getattr(p, "min", None), getattr(p, "max", None)) == (o.min, o.max)
        if o.argument:
            assert p.param_type_name == "argument" and p.metavar == o.metavar
        else:
            declared = [name for decl in o.flags for name in decl.split("/")] or [o.flag]
            assert sorted([*p.opts, *p.secondary_opts]) == sorted(declared) and p.opts[0] == o.flag


def parsed(command, flag, text):
    """What the command's parser makes of ``flag=text``: the value, or the line ``charrnn`` prints."""
    try:
        return get_command(app).commands[command].make_context(command, [f"{flag}={text}"]).params
    except Exception as e:  # typer's (vendored) click UsageError
        return " ".join(e.format_message().split())


@pytest.mark.parametrize("command, options", TABLES)
def test_coerce_reads_numbers_as_the_command_does(command, options):
    numeric = [o for o in options.values() if o.type in (int, float)]
    assert len(numeric) >= 5
    for o in numeric:
        for text in TEXTS:
            cli = parsed(command, o.flag, text)
            try:
                api = o.coerce(text)
            except CharrnnError as e:
                assert str(e) == cli, (o.name, text)
                continue
            value = cli[o.name] if isinstance(cli, dict) else cli
            assert api == value or math.isnan(api) and math.isnan(value), (o.name, text, cli)
            assert type(api) is type(value), (o.name, text)


def test_coerce_takes_python_values_as_their_text():
    assert TRAIN_OPTIONS["steps"].coerce(300) == TRAIN_OPTIONS["steps"].coerce("300") == 300
    assert TRAIN_OPTIONS["dropout"].coerce(0.2) == 0.2 and TRAIN_OPTIONS["layers"].coerce(2.0) == 2
    with pytest.raises(CharrnnError, match=r"^Invalid value for '--layers': Input should be a valid integer"):
        TRAIN_OPTIONS["layers"].coerce(2.5)
    assert TRAIN_OPTIONS["tie"].coerce(1) is True and TRAIN_OPTIONS["time"].coerce(90) == "90"
    assert TRAIN_OPTIONS["init_from"].coerce("base/best.pt") == TRAIN_OPTIONS["init_from"].coerce(
        TRAIN_OPTIONS["out"].coerce("base") / "best.pt"
    )


def test_the_choices_are_the_ones_the_library_accepts():
    from charrnn.data.prepare import VOCAB_KINDS
    from charrnn.model.network import CELLS
    from charrnn.runtime import precision
    from charrnn.screenplay.typeset import FORMATS

    assert TRAIN_OPTIONS["model"].choices == CELLS and TRAIN_OPTIONS["vocab"].choices == VOCAB_KINDS
    assert TRAIN_OPTIONS["precision"].choices == precision.CHOICES
    assert SAMPLE_OPTIONS["precision"].choices == precision.STEP_PRECISIONS
    assert SAMPLE_OPTIONS["fmt"].choices == FORMATS and TRAIN_OPTIONS["preset"].choices == tuple(PRESETS)
    for options in (TRAIN_OPTIONS, SAMPLE_OPTIONS):  # and --help lists each of them
        for o in options.values():
            assert all(choice in o.help for choice in o.choices), o.name


def test_open_bounds_are_checked_after_parsing():
    from charrnn.training.config import make_config

    assert [o.name for o in TRAIN_OPTIONS.values() if o.min_open] == ["lr", "grad_clip", "epochs"]
    for name in ("lr", "grad_clip", "epochs"):
        assert parsed("train", f"--{name.replace('_', '-')}", "0")[name] == 0.0
        with pytest.raises(CharrnnError, match=rf"^--{name.replace('_', '-')} must be > 0 \(got 0.0\)$"):
            make_config(None, {name: 0.0})
