"""The end of a successful trial removes the net, with the files a real
machine has (a Debian kernel's /boot/config is far larger than a /proc file)."""
from __future__ import annotations

import subprocess

from kexec_auto import commands, host, safetynet

RELEASE = "6.12.118+deb13-cloud-amd64"


def test_end_restores_the_kernels_own_panic_timeout_from_a_full_size_config(tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "run", lambda argv: subprocess.CompletedProcess(argv, 0, "", ""))
    root = tmp_path
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "boot").mkdir()
    (root / "proc/cmdline").write_text("root=/dev/vda ro kexec_auto.trial=240 panic=10\n")
    (root / "proc/sys/kernel/panic").write_text("10\n")
    # Debian's config files hold ~9000 lines (120-300 KB); the key comes late
    filler = "".join(f"CONFIG_OPTION_{n}=y\n" for n in range(9000))
    (root / f"boot/config-{RELEASE}").write_text(filler + "CONFIG_PANIC_TIMEOUT=0\n")
    assert (root / f"boot/config-{RELEASE}").stat().st_size > host.PROC_LIMIT
    assert safetynet.on_trial(str(root)) == 240
    safetynet.end(str(root), RELEASE, lambda line: None)
    assert (root / "proc/sys/kernel/panic").read_text() == "0\n"
    assert safetynet.on_trial(str(root)) is None
