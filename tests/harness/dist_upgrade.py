"""A bookworm machine with kexec-auto, dist-upgraded to trixie, in a chroot.

The tree starts as the bookworm VM tree (the provider's kernel installed),
gets bookworm's build of kexec-auto from a local repository, a configuration
made through debconf and by hand, and the bookworm cloud kernel through its
metapackage, as a cloud image has it.  Then it is upgraded the way Debian's
release notes say: sources switched to trixie (and the local repository to
trixie's build of kexec-auto, as the archive would carry it), `apt-get
upgrade --without-new-pkgs`, then `apt-get full-upgrade`.  The metapackage
brings trixie's kernel along, and kexec-auto's hooks must select it.

The chroot suite checks the upgraded tree (tests/chroot/test_dist_upgrade.py);
the VM suite boots it once and reboots it through autopkgtest
(tests/vm/test_dep8_reboot.py).  Built once per session.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import debbuild
from harness import debimage

FROM, TO = "bookworm", "trixie"
REPO_INSIDE = "/srv/kexec-auto-upgrade-repo"
#: The configuration the upgrade must keep: a debconf answer, settings made
#: with `kexec-auto set`, and a line written by hand.
PRESEED = "kexec-auto kexec-auto/extra string ka_upgrade_test=1\n"
SETTINGS = ("TRIES=3", "TRIAL_TIMEOUT=600")
HAND_LINE = "# kept across the upgrade: written by the administrator\n"
#: The machine's kernel command line, in /etc/kernel/cmdline: in a chroot
#: /proc/cmdline is the host's, and kexec-auto reuses only this file there
#: (the words the provider disk of tests/vm boots with).
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 panic=5"
#: What the VM boot needs in the tree, installed after the upgrade: sshd
#: for autopkgtest-virt-ssh, and what autopkgtest uses in the testbed to
#: install the package under test from a repository of its own (the guest
#: reaches no archive).
GUEST_PACKAGES = ("openssh-server", "apt-utils", "dpkg-dev")

_lock = threading.Lock()
_built: dict[str, "Upgraded"] = {}


@dataclass
class Upgraded:
    root: Path                 # the upgraded tree (in this session's work directory)
    base: debimage.BaseTree    # the bookworm VM tree it started from (provider kernel)
    before: dict[str, str]     # facts before the upgrade
    after: dict[str, str]      # the same facts after it
    seconds: dict[str, float] = field(default_factory=dict)
    log: str = ""


def _facts(chroot: debimage.Chroot) -> dict[str, str]:
    script = r"""
. /etc/default/kexec
echo "kernel_image=$KERNEL_IMAGE"
echo "initrd=$INITRD"
echo "append=$APPEND"
echo "version=$(dpkg-query -W -f '${Version}' kexec-auto)"
echo "kexec_tools=$(dpkg-query -W -f '${Version}' kexec-tools)"
echo "systemd=$(dpkg-query -W -f '${Version}' systemd)"
echo "debian=$(cat /etc/debian_version)"
echo "extra=$(kexec-auto get EXTRA_CMDLINE)"
echo "tries=$(kexec-auto get TRIES)"
echo "trial_timeout=$(kexec-auto get TRIAL_TIMEOUT)"
echo "debconf_extra=$(debconf-show kexec-auto | sed -n 's/^[* ]*kexec-auto\/extra: //p')"
echo "unit_enabled=$(readlink /etc/systemd/system/multi-user.target.wants/kexec-auto-load.service)"
echo "files=$(dpkg -L kexec-auto | grep '/systemd/.*kexec-auto' | sort | tr '\n' ' ')"
echo "init_scripts=$(ls /etc/init.d | grep kexec | tr '\n' ' ')"
echo "load_kexec_lines=$(grep -c '^LOAD_KEXEC=' /etc/default/kexec || true)"
echo "kernels=$(ls /boot | sed -n 's/^vmlinuz-//p' | xargs linux-version sort | tr '\n' ' ')"
"""
    out = chroot.sh(script)
    facts = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    facts["config"] = chroot.read("/etc/default/kexec-auto") or ""
    return facts


def _repo(chroot: debimage.Chroot, suite: str) -> None:
    debimage.local_repo([debbuild.release_build(suite).deb], chroot.path(REPO_INSIDE))
    chroot.path("/etc/apt/sources.list.d/kexec-auto-upgrade.list").write_text(
        f"deb [trusted=yes] file:{REPO_INSIDE} ./\n")


def _apt(chroot: debimage.Chroot, args: str, timeout: float = 1800) -> str:
    return chroot.sh("apt-get -q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef "
                     f"-o Dpkg::Options::=--force-confold {args} 2>&1", timeout=timeout)


def build(work: Path) -> Upgraded:
    base = debimage.base_tree(FROM)
    root = work / "root"
    debimage.copy_tree(base.path, root)
    seconds: dict[str, float] = {}
    log = []
    start = time.monotonic()
    chroot = debimage.Chroot(root, debimage.apt_archive_cache(FROM))
    with chroot.mounted():
        _repo(chroot, FROM)
        chroot.path("/etc/kernel").mkdir(exist_ok=True)
        chroot.path("/etc/kernel/cmdline").write_text(KERNEL_CMDLINE + "\n")
        chroot.sh("apt-get update -q")
        chroot.run(["debconf-set-selections"], input=PRESEED)
        log.append(_apt(chroot, "install kexec-auto linux-image-cloud-amd64"))
        chroot.run(["kexec-auto", "set", *SETTINGS])
        config = chroot.path("/etc/default/kexec-auto")
        config.write_text(config.read_text() + HAND_LINE)
        before = _facts(chroot)
    seconds["bookworm install"] = time.monotonic() - start

    start = time.monotonic()
    chroot = debimage.Chroot(root, debimage.apt_archive_cache(TO))
    (root / "etc/apt/sources.list").write_text(debimage.apt_sources(TO))
    with chroot.mounted():
        _repo(chroot, TO)
        chroot.sh("apt-get update -q")
        log.append(_apt(chroot, "upgrade --without-new-pkgs"))
        log.append(_apt(chroot, "full-upgrade"))
        after = _facts(chroot)
        seconds["dist-upgrade"] = time.monotonic() - start
        log.append(_apt(chroot, "install --no-install-recommends " + " ".join(GUEST_PACKAGES)))
    return Upgraded(root, base, before, after, seconds, "\n".join(log))


def upgraded() -> Upgraded:
    """The upgraded tree, built once per session."""
    with _lock:
        if "tree" not in _built:
            _built["tree"] = build(debimage.work_dir("dist-upgrade"))
        return _built["tree"]
