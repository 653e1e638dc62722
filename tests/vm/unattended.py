"""The unattended chain as a fleet lives it: a security kernel arrives at
night, unattended-upgrades installs it and reboots the machine by itself,
and the reboot lands in that kernel through kexec.

The image (built in a chroot, natively) has kexec-auto, needrestart and
unattended-upgrades installed from Debian, configured the Debian way:
`unattended-upgrades/enable_auto_updates` preseeded (20auto-upgrades) and
Automatic-Reboot "true" with Automatic-Reboot-Time "now" in apt.conf.d.  The
kernel metapackage linux-image-cloud-amd64 is installed at the suite's point
release version; its newer version from <suite>-security and the kernel it
depends on (real Debian packages, downloaded at build time) are published in
a local repository whose Release says what Debian's security archive says
(Origin Debian, Label Debian-Security, Codename <suite>-security), so
Debian's stock 50unattended-upgrades accepts them.  The guest has no other
source and no network.  Nothing is typed in the guest: the nightly
apt-daily-upgrade.service is started by a timer shortly after boot instead
of at 6:00.

Boots (one qemu process throughout when every reboot is a kexec one):

  0  provider kernel (qemu -kernel); no action: unattended-upgrades installs
     the new kernel and reboots.  A DPkg::Post-Invoke recorder writes what
     needrestart and kexec-auto say after each dpkg run, before that reboot.
  1  the new kernel; needrestart says nothing.  Then PIN= the provider's
     kernel (installed by hand, so the unattended run's removal of unused
     kernels, Debian's default, kept it): needrestart expects that one; reboot.
  2  the pinned kernel, through kexec; needrestart says nothing, though a
     newer kernel is installed.
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path

from . import image, scenarios

META = "linux-image-cloud-amd64"
SECURITY_REPO = "/srv/ka-security"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
POST_INVOKE_LOG = "/var/lib/ka-test/post-invoke.log"

REBOOT_CONF = """// kexec-auto VM test: reboot as soon as an unattended upgrade requires it
Unattended-Upgrade::Automatic-Reboot "true";
Unattended-Upgrade::Automatic-Reboot-Time "now";
"""

#: the nightly run, brought forward to just after the first boot
NIGHTLY_TIMER = """[Unit]
Description=kexec-auto VM test: the nightly unattended upgrade, just after the first boot
ConditionPathExists=!/var/lib/ka-test/nightly-started

[Timer]
OnBootSec=30s
Unit=apt-daily-upgrade.service

[Install]
WantedBy=timers.target
"""
NIGHTLY_ONCE = """[Service]
ExecStartPre=/bin/touch /var/lib/ka-test/nightly-started
ExecStartPre=/bin/sh -c 'echo "KA-PROGRESS seq=0 nightly upgrade run starts" > /dev/ttyS0'
"""

RECORDER = f"""#!/bin/sh
# kexec-auto VM test: after every dpkg run (inside the unattended upgrade,
# before its reboot), what needrestart and kexec-auto say.
{{
    echo "=== post-invoke $(date +%s)"
    needrestart -b -k 2>&1
    echo "REBOOT-REQUIRED: $(test -e /run/reboot-required && echo yes || echo no)"
    grep -v '^#' {TEXTFILE_DIR}/kexec-auto.prom 2>&1
}} >> {POST_INVOKE_LOG} 2>&1
# progress for the host, which gives up on a guest that stays silent too long
echo "KA-PROGRESS seq=0 dpkg run done" > /dev/ttyS0 2>/dev/null
exit 0
"""
RECORDER_HOOK = 'DPkg::Post-Invoke { "/usr/local/sbin/ka-post-invoke || true"; };\n'

STAGE_LIB = r"""ka_needrestart() {  # ka_needrestart KEY: needrestart's kernel check, on one line
    ka_result "$1" "$(needrestart -b -k 2>/dev/null | grep '^NEEDRESTART-K' | tr '\n' ' ')"
}
ka_metrics() {  # ka_metrics KEY: the samples of kexec-auto's metrics file
    ka_result "$1" "$(grep -v '^#' /var/lib/prometheus/node-exporter/kexec-auto.prom 2>&1)"
}
"""


def meta_versions(chroot: image.Chroot) -> tuple[tuple[str, str], tuple[str, str]]:
    """((point version, its kernel), (security version, its kernel)) of the
    kernel metapackage: the oldest and the newest version apt offers."""
    versions = [line.split("|")[1].strip()
                for line in chroot.sh(f"apt-cache madison {META}").splitlines() if "|" in line]
    versions = sorted(set(versions), key=functools.cmp_to_key(_dpkg_compare))
    if len(versions) < 2:
        raise image.BuildError(f"need two versions of {META} (point release and security), found {versions}")

    def kernel(version: str) -> str:
        depends = chroot.sh(f"apt-cache show {META}={version} | sed -n 's/^Depends: //p' | head -n 1")
        match = re.search(r"linux-image-(\S+?)(?:\s|,|$)", depends)
        if not match:
            raise image.BuildError(f"{META}={version}: no kernel in Depends: {depends!r}")
        return match.group(1)

    point, security = versions[0], versions[-1]
    if kernel(point) == kernel(security):
        raise image.BuildError(f"{META} {point} and {security} depend on the same kernel")
    return (point, kernel(point)), (security, kernel(security))


def _dpkg_compare(a: str, b: str) -> int:
    """-1, 0 or 1 as dpkg orders versions a and b."""
    if a == b:
        return 0
    return 1 if subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0 else -1


def security_repo(chroot: image.Chroot, suite: str, packages: list[str]) -> None:
    """A flat repository in the tree holding packages (downloaded from the
    archive), labelled like Debian's security archive."""
    repo = chroot.root / SECURITY_REPO.lstrip("/")
    repo.mkdir(parents=True, exist_ok=True)
    chroot.sh(f"cd {SECURITY_REPO} && apt-get download -q " + " ".join(packages))
    image.run(["sh", "-c", f"cd {repo} && apt-ftparchive packages . > Packages"])
    options = [f"-o APT::FTPArchive::Release::{field}={value}" for field, value in (
        ("Origin", "Debian"), ("Label", "Debian-Security"), ("Suite", f"{suite}-security"),
        ("Codename", f"{suite}-security"))]
    image.run(["sh", "-c", f"cd {repo} && apt-ftparchive {' '.join(options)} release . > Release.new"
                           " && mv Release.new Release"])


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def prepare(kernels: dict[str, str]):
    def _prepare(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
        root = chroot.root
        (root / "var/lib/ka-test").mkdir(parents=True, exist_ok=True)
        scenarios._add_repo(chroot)
        (point, old), (security, new) = meta_versions(chroot)
        kernels.update(old=old, new=new, point=point, security=security)
        chroot.sh("echo 'unattended-upgrades unattended-upgrades/enable_auto_updates boolean true'"
                  " | debconf-set-selections")
        notes = {"install": chroot.apt_install("kexec-auto unattended-upgrades needrestart")}
        chroot.apt_install(f"{META}={point}")
        notes["kexec_built"] = chroot.sh("cat /etc/default/kexec")
        # the newest of the provider's kernel and the point release's: what boot 0 selects
        kernels["first"] = json.loads(chroot.sh("kexec-auto status --json || true"))["selected"]
        security_repo(chroot, base.suite, [f"{META}={security}", f"linux-image-{new}"])
        # the guest reaches nothing but its local repositories
        (root / "etc/apt/sources.list").write_text("# kexec-auto VM test: no network\n")
        (root / "etc/apt/sources.list.d/ka-security.list").write_text(
            f"deb [trusted=yes] file:{SECURITY_REPO} ./\n")
        chroot.sh("apt-get update -q")
        notes["upgrade_plan"] = chroot.sh("apt-get -s -q upgrade --with-new-pkgs")
        notes["auto_upgrades"] = chroot.sh("cat /etc/apt/apt.conf.d/20auto-upgrades")
        _write(root, "/etc/apt/apt.conf.d/52kexec-auto-test-reboot", REBOOT_CONF)
        _write(root, "/etc/apt/apt.conf.d/99ka-test-post-invoke", RECORDER_HOOK)
        _write(root, "/usr/local/sbin/ka-post-invoke", RECORDER, 0o755)
        _write(root, "/etc/systemd/system/ka-nightly.timer", NIGHTLY_TIMER)
        _write(root, "/etc/systemd/system/apt-daily-upgrade.service.d/ka-test-once.conf", NIGHTLY_ONCE)
        wants = root / "etc/systemd/system/timers.target.wants/ka-nightly.timer"
        wants.parent.mkdir(parents=True, exist_ok=True)
        wants.symlink_to("/etc/systemd/system/ka-nightly.timer")
        # The guest builds the new kernel's initramfs under emulation: only
        # the modules this machine needs (virtio disk, ext4) keep that short.
        # Written after the chroot's kernel install, which must not probe the host.
        _write(root, "/etc/initramfs-tools/conf.d/ka-test-dep", "MODULES=dep\n")
        (root / TEXTFILE_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        return notes
    return _prepare


def stages(kernels: dict[str, str]):
    def _stages(base: image.BaseTree) -> list[str]:
        return [
            # 0: provider kernel; nothing is typed: the nightly run upgrades and reboots
            STAGE_LIB + """ka_metrics metrics
ka_needrestart needrestart
""",
            # 1: the new kernel, if all went well
            STAGE_LIB + f"""ka_file post_invoke {POST_INVOKE_LOG}
ka_file uu_log /var/log/unattended-upgrades/unattended-upgrades.log
ka_result reboot_required "$(test -e /run/reboot-required && echo present || echo absent)"
ka_result meta "$(dpkg-query -W -f '${{Version}}' {META})"
ka_needrestart needrestart
ka_metrics metrics
ka_run pin kexec-auto set PIN={base.provider}
ka_run pin_update kexec-auto update
ka_needrestart needrestart_pinned
ka_do reboot
""",
            # 2: the pinned older kernel
            STAGE_LIB + """ka_needrestart needrestart
ka_metrics metrics
""",
        ]
    return _stages


def build_unattended(suite: str) -> scenarios.Built:
    kernels: dict[str, str] = {}
    built = scenarios._build(suite, "unattended", prepare(kernels), stages(kernels),
                             {"boot_timeout": 1800, "total_timeout": 4800})
    built.notes.update({f"kernel_{key}": value for key, value in kernels.items()})
    return built
