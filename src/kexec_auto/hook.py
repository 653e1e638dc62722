"""The dpkg kernel hooks (postinst.d, postrm.d, initramfs post-update.d).

A hook must never fail a kernel install: run-parts --exit-on-error would
stop the kernel package's configuration, and with it apt.  So every error
is reported on stderr and the hook exits 0.
"""

from __future__ import annotations

import io
import os
import shlex
import sys
from typing import Optional, Sequence

# Maintainer-script action each hook directory acts on (None: always).
ACTS_ON = {"postinst.d": "configure", "postrm.d": "remove", "post-update.d": None}


def should_act(kind: str, deb_maint_params: Optional[str]) -> bool:
    """Whether the hook in directory ``kind`` acts, given DEB_MAINT_PARAMS.

    >>> should_act("postrm.d", "'upgrade' '6.1.0-56-amd64'")
    False
    >>> should_act("postinst.d", "configure 6.1.0-55-amd64")
    True
    >>> should_act("postinst.d", None)   # run by hand or by another tool
    True
    """
    wanted = ACTS_ON[kind]
    if wanted is None or not deb_maint_params:
        return True
    try:
        words = shlex.split(deb_maint_params)  # the shell's: eval set -- "$DEB_MAINT_PARAMS"
    except ValueError:
        words = deb_maint_params.split()
    return bool(words) and words[0] == wanted


def run(kind: str, argv: Sequence[str]) -> int:
    """Act as the hook in directory ``kind``; always 0, whatever happens."""
    try:
        _streams()
    except OSError:
        pass  # no descriptor to say it on, and nothing to stop the hook
    try:
        if not should_act(kind, os.environ.get("DEB_MAINT_PARAMS")):
            return 0
        from . import app, reboot, report

        root = os.environ.get("KEXEC_AUTO_ROOT", "/")
        if kind == "postinst.d" and argv:
            # A reinstalled or upgraded kernel package deserves a new try.
            reboot.forget(root, argv[0], why="its package was installed")
        app.update(root, quiet=False)
        report.write_metrics(root)
    except Exception as error:  # noqa: BLE001 - a hook must not break apt
        from .log import one_line

        release = f" for kernel {argv[0]}" if argv else ""
        try:
            print(f"kexec-auto: error{release}: {one_line(error)}; /etc/default/kexec left unchanged "
                  f"(kernel installation continues)", file=sys.stderr)
        except Exception:  # noqa: BLE001 - not even this may fail the kernel's installation
            pass
    return 0


def _streams() -> None:
    """Hooks may run under debconf: no stdin, and stdout belongs to it, so
    both go elsewhere (/dev/null, stderr), whichever descriptors are closed."""
    from .log import standard_streams

    standard_streams()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(errors="backslashreplace")  # a release that is not UTF-8 is still printed
    sys.stdout = sys.stderr
