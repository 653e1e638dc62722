"""Rendering /etc/default/kexec from the jinja2 template.

kexec-tools' scripts *source* that file as root, so every value is quoted
here, in Python, such that sourcing yields exactly the intended string; the
template only lays the lines out.

>>> shell_quote("/boot/vmlinuz-6.1.0-56-amd64")
'/boot/vmlinuz-6.1.0-56-amd64'
>>> shell_quote("root=/dev/vda quiet")
"'root=/dev/vda quiet'"
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

TEMPLATE = "default-kexec.j2"


class RenderError(ValueError):
    """A value that cannot be written into a shell-sourced file safely."""


def shell_quote(value: str, name: str = "value") -> str:
    """``value`` quoted for sh; newlines and NUL cannot be represented."""
    for char, label in (("\n", "a newline"), ("\r", "a carriage return"), ("\0", "a NUL byte")):
        if char in value:
            raise RenderError(f"{name} contains {label}, which /etc/default/kexec cannot hold: {value!r}")
    return shlex.quote(value)


def template_dirs() -> list[Path]:
    """Where templates are looked up: a checkout's templates/ first, then
    the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "templates"
    candidates: list[str] = [
        os.environ.get("KEXEC_AUTO_TEMPLATES", ""),
        str(checkout),
        str(Path(sys.prefix) / "share/kexec-auto/templates"),
        "/usr/share/kexec-auto/templates",
    ]
    return [Path(p) for p in candidates if p and Path(p, TEMPLATE).is_file()]


@functools.lru_cache(maxsize=None)
def template_text() -> str:
    """The template, read once per process (the digest and the rendering
    both need it)."""
    dirs = template_dirs()
    if not dirs:
        raise RenderError(f"template {TEMPLATE} not found")
    return (dirs[0] / TEMPLATE).read_text(encoding="utf-8")


def render_key(*inputs: object) -> str:
    """A digest of everything a rendering depends on, template included,
    so that an unchanged file can be recognised without importing jinja2."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps([inputs, template_text()]).encode()).hexdigest()


def render_default_kexec(
    release: Optional[str],
    image: str,
    initrd: str,
    append: str,
    reason: str,
    with_load_kexec: bool = True,
) -> str:
    """The text of /etc/default/kexec for the selected kernel.

    With ``release`` None (no kernel to boot) LOAD_KEXEC is false.  Without
    ``with_load_kexec`` there is no LOAD_KEXEC line at all: kexec-tools 2.0.27
    and later (trixie) dropped it and delete it from the file on every
    configure, which would look like a hand edit.
    """
    import jinja2  # deferred: only rendering needs it

    env = jinja2.Environment(autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template_text()).render(
        release=release or "none",
        reason=reason.replace("\n", " "),
        load_kexec=("true" if release else "false") if with_load_kexec else "",
        kernel_image=shell_quote(image, "KERNEL_IMAGE"),
        initrd=shell_quote(initrd, "INITRD"),
        append=shell_quote(append, "APPEND"),
    )
