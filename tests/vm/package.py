"""kexec-auto's .deb for the VM images, built once per session (tests/harness/debbuild.py)."""
from __future__ import annotations

from pathlib import Path

from harness.debbuild import release_build, session_build


def build_deb(suite: str | None = None) -> Path:
    """suite's own build (made inside a tree of that release), or without a
    suite the build on this machine."""
    return release_build(suite).deb if suite else session_build()["deb"]
