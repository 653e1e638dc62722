"""How a fleet sets kexec-auto up, and needrestart agreeing with it: the
README's fleet commands as they stand, and the real needrestart (Debian's
package), in bookworm and trixie trees where kexec-auto comes from a local
apt repository.

One tree per suite serves the module's tests, in order: needrestart and the
newest real Debian cloud kernel of the suite (NEW) are installed first, and
an older cloud kernel (OLD, a stand-in image: needrestart and kexec-auto only
read its header) is put beside it, then

1. the README's debconf preseeding and install;
2. needrestart's kernel check against every way kexec-auto selects a kernel;
3. after a purge, the README's /etc/default/kexec-auto and install.

Inside a chroot the running kernel is the host's.  For the needrestart test
an image of that release stands in /boot for "the kernel the machine
rebooted into", and a synthetic 99.1.0-1-amd64 image is the newest of all,
so that needrestart's own choice differs from every kernel kexec-auto
selects there.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import REPO
from harness.debimage import Chroot
from harness.matrix import in_matrix

from .conftest import bzimage, fresh_tree, newest_kernel

pytestmark = pytest.mark.chroot

NEWER = "99.1.0-1-amd64"
OLD = "6.1.0-1-cloud-amd64"
OWN_CMDLINE = "root=/dev/vda ro console=ttyS0"
SNIPPET = "/etc/needrestart/conf.d/kexec-auto.conf"
QUIET = {"NEEDRESTART_SUSPEND": "1"}  # no needrestart run from apt's hook meanwhile
SETTINGS = ("ENABLED", "FLAVOUR", "PIN", "EXCLUDE", "CMDLINE", "EXTRA_CMDLINE", "REQUIRE_INITRD", "HANDOFF")


def readme_block(name: str) -> str:
    """The indented shell block after <!-- fleet: NAME --> in the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- fleet: {name} -->\n\n((?:    .*\n|\n)+)", text)
    assert match, f"README.md has no block marked <!-- fleet: {name} -->"
    return "".join(line[4:] + "\n" for line in match.group(1).rstrip("\n").split("\n"))


def as_documented(chroot: Chroot, block: str) -> str:
    """Run a README block with sh, as root, in nothing but a login-like
    environment (no DEBIAN_FRONTEND or debconf variables of the harness)."""
    argv = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root", "LC_ALL=C.UTF-8", "NEEDRESTART_SUSPEND=1", "sh", "-e", "-c", block]
    return chroot.run(argv, timeout=900).stdout


def debconf(chroot: Chroot) -> dict[str, str]:
    """The answers of kexec-auto's questions (not of its error and note templates)."""
    out = chroot.run("debconf-show kexec-auto").stdout
    answers = dict(re.fullmatch(r"[* ] kexec-auto/(\S+):\s?(.*)", line).groups() for line in out.splitlines())
    answers.pop("invalid", None)
    answers.pop("firmware-reboots", None)
    return answers


def settings(chroot: Chroot) -> dict[str, str]:
    values = chroot.run(["kexec-auto", "get", *SETTINGS]).stdout.split("\n")
    return dict(zip(SETTINGS, values))


def selected_image(chroot: Chroot) -> str:
    return chroot.run(". /etc/default/kexec; echo \"$KERNEL_IMAGE $APPEND\"").stdout.strip()


def stand_in(chroot: Chroot, release: str, banner: str) -> None:
    """A kernel image of ``release`` in /boot with its initrd, no package."""
    chroot.path(f"/boot/vmlinuz-{release}").write_bytes(bzimage(banner))
    chroot.path(f"/boot/initrd.img-{release}").write_bytes(b"\x1f\x8b initrd")


#: CI runs the fleet tests on bookworm; KEXEC_AUTO_TEST_MATRIX=full on trixie too
CI_SUITES = ("bookworm",)


@pytest.fixture(scope="module", params=in_matrix(("bookworm", "trixie"), CI_SUITES))
def machine(request, fleet_repo: Path, tmp_path_factory) -> Iterator[tuple[Chroot, str, str, str]]:
    suite = request.param
    start = time.monotonic()
    with fresh_tree(suite, fleet_repo, tmp_path_factory.mktemp(f"fleet-{suite}")) as chroot:
        new = newest_kernel(chroot, suite)
        chroot.run(f"apt-get install -y -q needrestart linux-image-{new}", env=QUIET, timeout=1500)
        old = OLD
        stand_in(chroot, old, f"{old} (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.0-1")
        # the machine's own command line: a chroot's /proc/cmdline is the
        # build host's, which kexec-auto does not take
        chroot.path("/etc/kernel/cmdline").write_text(OWN_CMDLINE + "\n")
        print(f"{suite}: needrestart and {new} installed after {time.monotonic() - start:.0f} s")
        yield chroot, suite, old, new
        print(f"{suite}: module done after {time.monotonic() - start:.0f} s")


def test_readme_preseeding_installs_with_no_question(machine):
    chroot, suite, old, new = machine
    as_documented(chroot, readme_block("preseed"))
    assert debconf(chroot) == {
        "enable": "true", "kernels": "running", "release": "", "cmdline": "running",
        "cmdline_string": "", "extra": "panic=10", "handoff": "true",
    }
    assert settings(chroot) == {
        "ENABLED": "true", "FLAVOUR": "running", "PIN": "", "EXCLUDE": "", "CMDLINE": "",
        "EXTRA_CMDLINE": "panic=10", "REQUIRE_INITRD": "true", "HANDOFF": "true",
    }
    image, append = selected_image(chroot).split(" ", 1)
    # no kernel of the chroot's (the host's) flavour: the newest of any flavour
    assert image == f"/boot/vmlinuz-{new}"
    assert append == f"{OWN_CMDLINE} panic=10"


def needrestart(chroot: Chroot) -> dict[str, str]:
    """needrestart's kernel check in batch mode: KCUR, KEXP, KSTA
    (1: up to date, 3: a newer kernel is expected)."""
    result = chroot.run("needrestart -b -k", check=False)
    assert result.returncode == 0, result
    assert "kexec-auto" not in result.stderr and "Error" not in result.stderr, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return {key.removeprefix("NEEDRESTART-"): value for key, value in lines.items() if key.startswith("NEEDRESTART-K")}


def select(chroot: Chroot, *assignments: str) -> str | None:
    chroot.run(["kexec-auto", "set", *assignments])
    chroot.run("kexec-auto update", check=False)
    return json.loads(chroot.run("kexec-auto status --json", check=False).stdout)["selected"]


def test_needrestart_expects_the_kernel_kexec_auto_selected(machine):
    chroot, suite, old, new = machine
    chroot.run("apt-get install -y -q kexec-auto", env=QUIET)
    running = chroot.run("uname -r").stdout.strip()
    version = chroot.run("uname -v").stdout.strip()
    stand_ins = ((running, f"{running} (kexec-auto test) {version}"),
                 (NEWER, f"{NEWER} (kexec-auto test) #1 SMP Debian 99.1-1"))
    for release, banner in stand_ins:
        stand_in(chroot, release, banner)
    print(chroot.run("dpkg-query -W needrestart").stdout)
    assert chroot.path(SNIPPET).is_file()

    # needrestart's own choice, with kexec-auto disabled: the newest image
    assert select(chroot, "ENABLED=false", "FLAVOUR=any", "EXTRA_CMDLINE=", "HANDOFF=false") == NEWER
    assert needrestart(chroot) == {"KCUR": running, "KEXP": NEWER, "KSTA": "3"}

    cases = [
        ("the newest, before the reboot", ("ENABLED=true",), NEWER),
        ("FLAVOUR", ("FLAVOUR=cloud-amd64",), new),
        ("PIN", ("FLAVOUR=any", f"PIN={old}"), old),
        ("EXCLUDE", ("PIN=", "FLAVOUR=cloud-amd64", f"EXCLUDE={new}"), old),
    ]
    for what, assignments, expected in cases:
        assert select(chroot, *assignments) == expected, what
        assert needrestart(chroot) == {"KCUR": running, "KEXP": expected, "KSTA": "3"}, what

    # after the reboot into a pinned kernel: nothing to report, though newer ones exist
    assert select(chroot, "EXCLUDE=", f"PIN={running}") == running
    assert needrestart(chroot) == {"KCUR": running, "KEXP": running, "KSTA": "1"}
    verbose = chroot.run("needrestart -v -b -k", check=False).stderr
    assert f"[kexec-auto] expecting kernel {running}, the one kexec-auto selected" in verbose

    # NEW was tried and the machine came up in another kernel: marked bad.
    # In a chroot kexec-auto cannot tell the running kernel (the host's), so
    # the installed package's own assessment is applied as `boot` would,
    # with the stand-in release running, and TRIES=1 (at the default of
    # two, the first failure leaves NEW selected for one more try).
    assert select(chroot, "PIN=", "FLAVOUR=cloud-amd64", "TRIES=1") == new
    chroot.run(["python3", "-c", "from kexec_auto import assess, bootstate, clock; bootstate.change_boot_state('/', "
                f"lambda s: assess.assess_boot(assess.start_trial(s, {new!r}, clock.now()), {running!r}, "
                "clock.now(), tries=1))"])
    chroot.run("kexec-auto update")
    assert json.loads(chroot.run("kexec-auto status --json", check=False).stdout)["bad_kernels"].keys() == {new}
    assert needrestart(chroot) == {"KCUR": running, "KEXP": old, "KSTA": "3"}

    # removed, not purged: the snippet stays as a conffile and does nothing.
    # (Removing kexec-auto's initramfs hook rebuilds the newest initrd
    # through initramfs-tools' trigger; a stand-in's cannot be: it goes.)
    for release, _ in stand_ins:
        chroot.path(f"/boot/initrd.img-{release}").unlink()
    chroot.run("apt-get remove -y -q kexec-auto", env=QUIET)
    assert chroot.path(SNIPPET).is_file()
    assert needrestart(chroot) == {"KCUR": running, "KEXP": NEWER, "KSTA": "3"}
    chroot.run("apt-get purge -y -q kexec-auto", env=QUIET)
    assert not chroot.path(SNIPPET).exists()
    for release, _ in stand_ins:
        chroot.path(f"/boot/vmlinuz-{release}").unlink()


def test_readme_configuration_file_installs_and_stays_as_written(machine):
    chroot, suite, old, new = machine
    chroot.run("apt-get purge -y -q kexec-auto", env=QUIET)  # a machine that never had it
    assert chroot.run("debconf-show kexec-auto").stdout == ""
    block = readme_block("file")
    as_documented(chroot, block)
    written = re.search(r"<<'EOF'\n(.*?)EOF\n", block, re.S).group(1)
    assert chroot.read("/etc/default/kexec-auto") == written
    assert settings(chroot) == {
        "ENABLED": "true", "FLAVOUR": "running", "PIN": "", "EXCLUDE": "*-rt-*", "CMDLINE": "",
        "EXTRA_CMDLINE": "panic=10", "REQUIRE_INITRD": "true", "HANDOFF": "true",
    }
    # debconf shows what the file says
    assert debconf(chroot) == {
        "enable": "true", "kernels": "running", "release": "", "cmdline": "running",
        "cmdline_string": "", "extra": "panic=10", "handoff": "true",
    }
    assert selected_image(chroot).split(" ", 1)[0] == f"/boot/vmlinuz-{new}"
    # the configuration management's next run would find nothing to change
    chroot.run("dpkg-reconfigure -fnoninteractive kexec-auto")
    chroot.run("apt-get install -y -q --reinstall kexec-auto", env=QUIET)
    assert chroot.read("/etc/default/kexec-auto") == written
