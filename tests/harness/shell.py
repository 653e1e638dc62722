"""sh as the oracle: what dash makes of a file."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Optional


def dash_value(path: Path, name: str) -> Optional[bytes]:
    """The value dash gives ``name`` after sourcing ``path``; None when the
    file fails in dash.  No command can be found (PATH is empty), so a
    line that would run one runs nothing."""
    script = f'. {shlex.quote(str(path))} || exit 9; printf "%s" "${{{name}-}}"'
    result = subprocess.run(["/bin/dash", "-c", script], capture_output=True, cwd=path.parent,
                            env={"PATH": "/nonexistent", "HOME": "/root"}, timeout=10)
    return result.stdout if result.returncode == 0 and not result.stderr else None
