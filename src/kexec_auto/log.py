"""Where kexec-auto's messages go: one line each, on stderr.

Each is prefixed "kexec-auto:"; never stdout, since the kernel hooks run
under apt.  Functions that talk take a ``log`` callable, so tests collect
the lines."""

from __future__ import annotations

import sys
from typing import Callable

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(f"kexec-auto: {message}", file=sys.stderr)
