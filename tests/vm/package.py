"""kexec-auto's .deb for the VM images: the session's one build (tests/debbuild.py)."""
from __future__ import annotations

from pathlib import Path

from debbuild import session_build


def build_deb() -> Path:
    return session_build()["deb"]
