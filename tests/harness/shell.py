"""sh as the oracle: what dash makes of a file, and what debian/config's
parser (its awk) makes of it."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
CONFIG_SCRIPT = REPO / "debian/config"


def config_functions(*names: str) -> str:
    """The sh functions ``names`` as debian/config defines them."""
    text = CONFIG_SCRIPT.read_text()
    return "\n".join(re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", text, re.M | re.S).group(0) for name in names)


def dash_value(path: Path, name: str) -> Optional[bytes]:
    """The value dash gives ``name`` after sourcing ``path``; None when the
    file fails in dash.  No command can be found (PATH is empty), so a
    line that would run one runs nothing."""
    script = f'. {shlex.quote(str(path))} || exit 9; printf "%s" "${{{name}-}}"'
    result = subprocess.run(["/bin/dash", "-c", script], capture_output=True, cwd=path.parent,
                            env={"PATH": "/nonexistent", "HOME": "/root"}, timeout=10)
    return result.stdout if result.returncode == 0 and not result.stderr else None


def config_value(path: Path, key: str) -> tuple[int, bytes]:
    """What debian/config's file_value gives: (0, value), (1, b"") when
    ``key`` is not assigned, (2, b"") when the file is refused."""
    script = (config_functions("file_value", "conf_readable") + f"\nCONFFILE={shlex.quote(str(path))}\n"
              f"conf_readable || exit 2\nfile_value {shlex.quote(key)}\n")
    result = subprocess.run(["sh", "-c", script], capture_output=True, timeout=10)
    if result.returncode == 0:
        assert result.stdout.endswith(b"\n"), result.stdout
        return 0, result.stdout[:-1]
    return result.returncode, b""
