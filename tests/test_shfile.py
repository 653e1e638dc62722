"""/etc/default/kexec-auto means the same to sh and to kexec-auto (and so
to debconf, which kexec-auto seeds), in both directions.

dash is the oracle: every line kexec-auto accepts must give the value dash
gives; ``kexec-auto set`` followed by reading back gives the value set.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kexec_auto import config, shfile
from kexec_auto.config import ConfigError, parse_config, set_values
from harness.shell import dash_value

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Characters that mean something to sh, and some that other tools take for
# line breaks (Python's splitlines, Unicode), plus ordinary text.
SPECIAL = list(" \t'\"\\$`;&|<>()~:#=*?[]{}!%^\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029") + ["\\c", "\\n", "é", "日"]
hostile_text = st.lists(st.sampled_from(SPECIAL + list("ab=/-")), max_size=14).map("".join)
# What a setting may hold: anything but control characters (tab is fine).
value_text = st.lists(
    st.one_of(st.sampled_from([c for c in SPECIAL if not config._CONTROL.search(c)]),
              st.characters(blacklist_categories=("Cs", "Cc")), st.just("\t")),
    max_size=24,
).map("".join)


def plain(text: str) -> str:
    """``text`` spelled with backslashes outside quotes."""
    return "".join("\\" + c for c in text)


def single(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def double(text: str) -> str:
    return '"' + "".join("\\" + c if c in '$`"\\' else c for c in text) + '"'


# A value is written as pieces, each spelled one of the ways sh reads
# literally; then the line gets optional export, blanks and a comment.
piece = st.tuples(st.sampled_from([plain, single, double]), st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\0"), min_size=1, max_size=8))
spelled = st.tuples(
    st.lists(piece, max_size=4),
    st.sampled_from(["", "  ", "\t", "export ", " export\t"]),
    st.sampled_from(["", " ", "  # a comment with 'quotes' and \"more\" $(x)", "\t#", " #"]),
)


def write(tmp_path, text: str):
    path = tmp_path / "kexec-auto"
    path.write_bytes(text.encode("utf-8"))
    return path


def kexec_auto_value(text: str, key: str):
    """(ok, value) as kexec-auto reads ``key`` from the file ``text``."""
    try:
        found = shfile.parse(text)
    except shfile.ShSyntaxError:
        return False, None
    values = {name: value for _, name, value in found}
    return True, values.get(key)


@SETTINGS
@given(spelling=spelled)
@example(spelling=([(plain, "~")], "", ""))
@example(spelling=([(double, "a\\c")], "", ""))
def test_values_kexec_auto_accepts_mean_the_same_to_dash_and_to_debian_config(tmp_path, spelling):
    pieces, head, tail = spelling
    value = "".join(text for _, text in pieces)
    raw = "".join(spell(text) for spell, text in pieces) or '""'
    text = f"# settings\n{head}EXTRA_CMDLINE={raw}{tail}\n"
    path = write(tmp_path, text)
    ok, parsed = kexec_auto_value(text, "EXTRA_CMDLINE")
    assert ok, text
    assert parsed == value
    assert dash_value(path, "EXTRA_CMDLINE") == value.encode()


@SETTINGS
@given(raw=hostile_text, lead=st.sampled_from(["", " ", "export "]))
@example(raw="a#b", lead="")
@example(raw='"a\\$b\\c"', lead="")
@example(raw="a:~", lead="")
@example(raw="~", lead="")
@example(raw="'a'\u2028b", lead="")
@example(raw="a\\", lead="")
@example(raw="a;b", lead="")
def test_any_line_is_read_as_dash_reads_it_or_refused(tmp_path, raw, lead):
    text = f"{lead}EXTRA_CMDLINE={raw}\n"
    path = write(tmp_path, text)
    ok, parsed = kexec_auto_value(text, "EXTRA_CMDLINE")
    if ok:
        assert dash_value(path, "EXTRA_CMDLINE") == parsed.encode(), text


@SETTINGS
@given(line=hostile_text)
def test_a_line_kexec_auto_refuses_seeds_no_debconf_answer(root, capsys, line):
    from kexec_auto import cli

    text = f"PIN=6.1.0-56-amd64\n{line}\n"
    root.config(text)
    ok, parsed = kexec_auto_value(text, "PIN")
    status = cli.main(["debconf-answers", "--root", str(root)])
    out = capsys.readouterr().out
    assert (status, "release 6.1.0-56-amd64\n" in out) == ((0, True) if ok else (1, False)), (text, out)
    if ok:
        assert dash_value(root.file("/etc/default/kexec-auto"), "PIN") == b"6.1.0-56-amd64"


@SETTINGS
@given(value=value_text)
@example(value="a\u2028PIN=6.1.0-56-amd64")
@example(value="back\\slash \\c and \\n")
@example(value="back\\slash \\c and \\t")
@example(value="#not a comment")
def test_set_then_read_back_gives_the_value(tmp_path, value):
    if "\\n" in value:  # debconf would read it back as a line break
        with pytest.raises(ConfigError, match="read back by debconf as a line break"):
            set_values([], {"EXTRA_CMDLINE": value})
        return
    lines = set_values(["# my notes", "EXTRA_CMDLINE=old"], {"EXTRA_CMDLINE": value})
    text = "\n".join(lines) + "\n"
    path = write(tmp_path, text)
    conf, warnings = parse_config(text)
    assert (conf.extra_cmdline, conf.pin, warnings) == (value, "", [])
    assert dash_value(path, "EXTRA_CMDLINE") == value.encode()
    assert dash_value(path, "PIN") == b""


def test_a_line_separator_inside_a_comment_never_becomes_a_setting(tmp_path, root):
    from kexec_auto import cli

    for separator in ("\u2028", "\x85", "\x1e", "\r", "\x0c"):
        root.config(f"# note{separator}PIN=6.1.0-56-amd64\n")
        assert cli.main(["set", "EXTRA_CMDLINE=quiet", "--root", str(root)]) == 0
        path = root.file("/etc/default/kexec-auto")
        text = path.read_bytes().decode()
        assert text == f"# note{separator}PIN=6.1.0-56-amd64\nEXTRA_CMDLINE=quiet\n"
        assert parse_config(text)[0].pin == ""
        assert dash_value(path, "PIN") == b""


def test_control_characters_and_overlong_values_are_refused_by_set():
    for value in ("a\rb", "a\x1bb", "x" * 3000):
        with pytest.raises(ConfigError):
            set_values([], {"EXTRA_CMDLINE": value})
    set_values([], {"EXTRA_CMDLINE": "tab\tis fine"})


def test_long_values_are_parsed_in_linear_time():
    # shlex, used before, takes minutes on a 2 MB value.
    value = "a" * 1_000_000 + "'b c'" + "\\ d" * 300_000
    started = time.monotonic()
    assert config.parse_value(value) == "a" * 1_000_000 + "b c" + " d" * 300_000
    assert time.monotonic() - started < 10
