"""kexec-auto's settings file on disk, /etc/default/kexec-auto.

It is read here (config parses it), and settings are changed in it without
losing anything else it holds."""

from __future__ import annotations

from typing import Optional

from . import files, lock
from .config import CONFIG_LIMIT, CONFIG_PATH, KEYS, Config, ConfigError, parse_config, set_values
from .paths import at


def read_config_text(root: str) -> Optional[str]:
    """The text of the config file, None when there is none; ConfigError
    when it is not a regular UTF-8 file of sane size."""
    try:
        data = files.read_bytes(at(root, CONFIG_PATH), limit=CONFIG_LIMIT)
    except files.FileError as error:
        raise ConfigError(f"{CONFIG_PATH}: {str(error).rpartition(': ')[2]}") from None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{CONFIG_PATH}: not UTF-8 text (byte {error.start})") from None


def load_config(root: str) -> tuple[Config, list[str]]:
    text = read_config_text(root)
    return parse_config(text, source=CONFIG_PATH) if text is not None else (Config(), [])


@lock.exclusive
def set_settings(root: str, assignments: list[str]) -> None:
    """Write KEY=VALUE settings into the config file, keeping everything
    else in it; nothing is written unless every value is valid."""
    updates = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ConfigError(f"{assignment!r}: expected KEY=VALUE")
        updates[key] = value
    path = at(root, CONFIG_PATH)
    current = read_config_text(root)
    lines = (current or "").split("\n")  # sh splits lines at newlines only
    if lines[-1] == "":
        lines.pop()
    lines = set_values(lines, updates)
    content = "\n".join(lines) + "\n"
    parse_config(content, source=CONFIG_PATH)  # the whole file must stay valid
    if content != current:
        files.make_dirs(path.parent)
        files.write_atomic(path, content)


def setting_text(config: Config, key: str) -> str:
    """A setting's value as the file spells it (``kexec-auto get``).

    >>> setting_text(Config(exclude=("*-rt-*", "6.1.0-9-*")), "EXCLUDE"), setting_text(Config(), "ENABLED")
    ('*-rt-* 6.1.0-9-*', 'true')
    """
    if key not in KEYS:
        raise ConfigError(f"unknown setting {key}")
    value = getattr(config, KEYS[key][0])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return " ".join(value)
    return str(value)
