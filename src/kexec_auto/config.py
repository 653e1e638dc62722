"""kexec-auto's own settings: /etc/default/kexec-auto.

The file holds shell-style ``KEY=value`` lines (values may be quoted), so an
administrator can edit it like any other file in /etc/default and debconf can
seed its answers from it.  Parsing is pure: :func:`parse_config` takes lines
and returns a :class:`Config` plus warnings, or raises :class:`ConfigError`.

>>> config, warnings = parse_config(['FLAVOUR=any', 'EXCLUDE="*-rt-* 6.1.0-9-*"'])
>>> config.flavour, config.exclude, warnings
('any', ('*-rt-*', '6.1.0-9-*'), [])
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from typing import Iterable, Union

from . import shfile
from .cmdline import max_length

CONFIG_PATH = "/etc/default/kexec-auto"
CONFIG_LIMIT = 64 << 10  # bytes; debian/config refuses larger files too

_FLAVOUR = re.compile(r"[a-z0-9][a-z0-9+.-]*")
_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.~_-]*")  # as release.unsafe_release
_BOOLEANS = {"true": True, "false": False}


class ConfigError(Exception):
    """A setting that kexec-auto cannot act on; the message names it."""


@dataclasses.dataclass(frozen=True)
class Config:
    enabled: bool = True
    flavour: str = "running"
    pin: str = ""
    exclude: tuple[str, ...] = ()
    cmdline: str = ""
    extra_cmdline: str = ""
    require_initrd: bool = True
    handoff: bool = False
    tries: int = 2
    trial_timeout: int = 300


# Key in the file -> (Config field, validator turning the text into the value).
def _boolean(text: str) -> bool:
    if text not in _BOOLEANS:
        raise ValueError("expected true or false")
    return _BOOLEANS[text]


def _flavour(text: str) -> str:
    if text in ("running", "any") or _FLAVOUR.fullmatch(text):
        return text
    raise ValueError("expected running, any or a kernel flavour such as cloud-amd64")


def _pin(text: str) -> str:
    if text == "" or _RELEASE.fullmatch(text):
        return text
    raise ValueError("expected a kernel release such as 6.1.0-56-cloud-amd64, or nothing")


def _number(low: int, high: int, what: str):
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise ValueError(f"expected {what} from {low} to {high}")
        return int(text)

    return parse


def _globs(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _text(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("newlines, NUL and other control characters (but tab) are not allowed")
    if "\\n" in text:
        # debconf's database stores a line break as these two characters
        # and reads them back as one: dpkg-reconfigure would show (and
        # write back) another value.
        raise ValueError("a backslash before 'n' is read back by debconf as a line break")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("not UTF-8 text") from None
    if size > max_length():
        raise ValueError(f"{size} bytes, more than a kernel command line can hold ({max_length()})")
    return text


KEYS = {
    "ENABLED": ("enabled", _boolean),
    "FLAVOUR": ("flavour", _flavour),
    "PIN": ("pin", _pin),
    "EXCLUDE": ("exclude", _globs),
    "CMDLINE": ("cmdline", _text),
    "EXTRA_CMDLINE": ("extra_cmdline", _text),
    "REQUIRE_INITRD": ("require_initrd", _boolean),
    "HANDOFF": ("handoff", _boolean),
    "TRIES": ("tries", _number(1, 9, "a number of failed trials")),
    "TRIAL_TIMEOUT": ("trial_timeout", _number(30, 86400, "a number of seconds")),
}


def validate(key: str, text: str, where: str = "") -> object:
    """The value of setting ``key`` given as ``text``; ConfigError if invalid.

    >>> validate("ENABLED", "false")
    False
    >>> try:
    ...     validate("ENABLED", "yes")
    ... except ConfigError as error:
    ...     print(error)
    ENABLED: invalid value 'yes': expected true or false
    """
    if key not in KEYS:
        raise ConfigError(f"{where}unknown setting {key}")
    try:
        return KEYS[key][1](text)
    except ValueError as error:
        raise ConfigError(f"{where}{key}: invalid value {text!r}: {error}") from None


def parse_value(raw: str) -> str:
    """The string that ``KEY=raw`` assigns in sh (quotes, no expansion);
    ValueError for what sh would read differently or run.

    >>> parse_value("'a b'"), parse_value("a#b")
    ('a b', 'a#b')
    >>> parse_value("$HOME")
    Traceback (most recent call last):
    ValueError: '$H' starts an expansion: kexec-auto does not expand; quote it with '...'
    """
    assignment = shfile.parse_line(f"KEY={raw}")
    assert assignment is not None  # the line is an assignment
    return assignment[1]


def parse_config(lines: Union[str, Iterable[str]], source: str = CONFIG_PATH) -> tuple[Config, list[str]]:
    """Parse a config file, given as its text or as its lines.

    Returns the config and warnings (unknown keys), each naming ``source``
    and the line number.  Raises ConfigError for a bad value or a line
    that sh would read differently from kexec-auto (see shfile).
    """
    if isinstance(lines, str):
        lines = lines.split("\n")
    values: dict[str, object] = {}
    warnings = []
    for number, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith("\n") else line
        where = f"{source}:{number}: "
        try:
            assignment = shfile.parse_line(line)
        except ValueError as error:
            key = shfile.assigned_name(line)
            what = f"{key}: cannot parse {line.split('=', 1)[1]!r}" if key else f"cannot parse {line.strip()!r}"
            raise ConfigError(f"{where}{what}: {error}") from None
        if assignment is None:
            continue
        key, text = assignment
        if key not in KEYS:
            warnings.append(f"{where}ignoring unknown setting {key}")
            continue
        values[KEYS[key][0]] = validate(key, text, where)
    return Config(**values), warnings  # type: ignore[arg-type]  # each value validated for its field


def _quote(text: str) -> str:
    return shlex.quote(text) if text else '""'


def set_values(lines: list[str], updates: dict[str, str]) -> list[str]:
    """The file's lines with ``updates`` (KEY -> text) applied.

    Existing assignments are replaced in place, keeping comments and every
    other line; new keys are appended.  Values are validated first.
    ``lines`` are the file's text split at newlines only (never at other
    line separators, which sh does not split at).

    >>> set_values(["# mine", "PIN=", "X=1"], {"PIN": "6.1.0-56-amd64", "ENABLED": "true"})
    ['# mine', 'PIN=6.1.0-56-amd64', 'X=1', 'ENABLED=true']
    """
    for key, text in updates.items():
        validate(key, text)
    pending = dict(updates)
    result = []
    for line in lines:
        name = shfile.assigned_name(line.rstrip("\n"))
        if name is not None and name in updates:
            key = name
            if key not in pending:
                continue  # a later duplicate of a key already written
            result.append(f"{key}={_quote(pending.pop(key))}")
        else:
            result.append(line.rstrip("\n"))
    result.extend(f"{key}={_quote(text)}" for key, text in pending.items())
    return result
