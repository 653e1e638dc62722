"""Debian's kexec-tools as kexec-auto meets it: its configuration, the kexec binary, the coldreboot flag.

Its configuration is /etc/default/kexec and /etc/default/kexec.d.

/etc/default/kexec is sourced by kexec-tools' scripts as root.  On this
system's own root kexec-auto sources it the same way, with sh, to see what
kexec-tools sees; in another root nothing is run (see shfile).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional

from . import commands, files, shfile
from .paths import at, is_host

DEFAULT_KEXEC = "/etc/default/kexec"
DEFAULT_KEXEC_D = "/etc/default/kexec.d"
NO_KEXEC_REBOOT = "/no-kexec-reboot"  # kexec-tools' coldreboot flag
DEFAULT_KEXEC_VARS = ("LOAD_KEXEC", "KERNEL_IMAGE", "INITRD", "APPEND", "USE_GRUB_CONFIG")
_SOURCE_DEFAULT_KEXEC = r"""
. "$1"
if [ -d "$2" ]; then
    for snippet in $(run-parts --list "$2"); do . "$snippet"; done
fi
printf '%s\0' "${LOAD_KEXEC-}" "${KERNEL_IMAGE-}" "${INITRD-}" "${APPEND-}" "${USE_GRUB_CONFIG-}"
"""
_RUN_PARTS_NAME = re.compile(r"[A-Za-z0-9_-]+")
SOURCE_TIMEOUT = 10  # seconds


def _snippets(root: str) -> list[Path]:
    """/etc/default/kexec.d/* in the order run-parts --list gives them."""
    directory = at(root, DEFAULT_KEXEC_D)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape")):
        path = at(root, f"{DEFAULT_KEXEC_D}/{name}")
        if _RUN_PARTS_NAME.fullmatch(name) and path.is_file():
            found.append(path)
    return found


def source_default_kexec(root: str) -> Optional[dict[str, str]]:
    """What kexec-tools sees: /etc/default/kexec and /etc/default/kexec.d/*
    as sh sources them.  None when the file does not exist.

    On this system's own root they are sourced by sh, as kexec-tools does
    (after checking that each is a regular file of sane size, so that sh
    cannot hang on a FIFO).  In another root nothing is run: the files are
    read as plain assignments (see shfile), and anything else in them is
    an error naming the file and line.
    """
    path = at(root, DEFAULT_KEXEC)
    main = files.read_bytes(path)
    if main is None:
        return None
    snippets = _snippets(root)
    if not is_host(root):
        values: dict[str, str] = {}
        for source, data in [(path, main)] + [(p, files.read_bytes(p) or b"") for p in snippets]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise files.FileError(f"{source}: not UTF-8 text") from None
            try:
                shfile.parse(text, variables=values)
            except shfile.ShSyntaxError as error:
                raise OSError(f"{source}:{error.line}: cannot be read without running it ({error}); "
                              "kexec-auto runs nothing from another root") from None
        return {name: values.get(name, "") for name in DEFAULT_KEXEC_VARS}
    for snippet in snippets:
        files.read_bytes(snippet)  # a FIFO or a huge file is refused here, not hung on in sh
    try:
        result = subprocess.run(
            ["sh", "-c", _SOURCE_DEFAULT_KEXEC, "sh", str(path), str(at(root, DEFAULT_KEXEC_D))],
            capture_output=True, stdin=subprocess.DEVNULL, check=False, timeout=SOURCE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{path}: sh did not finish sourcing it within {SOURCE_TIMEOUT} s") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"{path}: sh cannot source it: {message[-1] if message else 'error'}")
    values_list = result.stdout.decode(errors="surrogateescape").split("\0")[: len(DEFAULT_KEXEC_VARS)]
    return dict(zip(DEFAULT_KEXEC_VARS, values_list))


def reads_load_kexec(root: str) -> bool:
    """Whether the installed kexec-tools still has its LOAD_KEXEC setting
    (its kexec-load init script, bookworm and older)."""
    return at(root, "/etc/init.d/kexec-load").exists()


def kexec_binary() -> Optional[str]:
    return commands.which("kexec")
