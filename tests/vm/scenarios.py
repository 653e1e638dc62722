"""The VM scenarios: how each disk is prepared and what the guest does per boot.

A scenario is an image recipe (chroot work done natively at build time) plus a
list of stage scripts, one per boot, that chain reboots inside one qemu
process wherever kexec keeps it alive.  Stage N runs on boot N; what boot N+1
reports (uname, which qemu process) is the outcome of stage N's action.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import pytest

from harness import debbuild
from harness.matrix import FULL_ONLY, MATRIX_ENV, full_matrix, in_matrix  # noqa: F401 (used by the VM modules)

from . import guest, image, package

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SUITES = ("bookworm", "trixie")
#: the same suites on arm64 (qemu-system-aarch64, debimage.ARCHES)
ARM64 = tuple(f"{suite}-arm64" for suite in SUITES)


def suites(ci: Sequence[str], extra: Sequence[str] = ()) -> pytest.MarkDecorator:
    """Parametrize a module's tests by suite (SUITES, then extra): ci in CI,
    every suite in the full matrix."""
    return pytest.mark.parametrize("suite", in_matrix((*SUITES, *extra), ci))


@dataclass(frozen=True)
class Built:
    suite: str  # the VM target: a suite, or suite-arch (debimage.split_target)
    scenario: str
    disk: Path
    base: image.BaseTree
    build_seconds: float
    notes: dict[str, str]
    #: keyword arguments for guest.run_chain (e.g. a command line per qemu run)
    chain_options: dict[str, object] = field(default_factory=dict)
    #: how the disk boots: "provider" (qemu -kernel), "bios", "uefi", "secureboot"
    layout: str = "provider"
    #: GRUB's menu timeout in seconds (firmware layouts)
    grub_timeout: int | None = None

    @property
    def arch(self) -> str:
        return self.base.arch


def grub_cmdline(append: str = guest.APPEND) -> str:
    """The guest's command line as GRUB passes it: the provider path's words
    without root= and rw (GRUB gives root=UUID=... ro itself).

    >>> grub_cmdline("root=/dev/vda rw console=ttyS0 panic=5")
    'console=ttyS0 panic=5'
    """
    return " ".join(w for w in append.split() if not w.startswith("root=") and w != "rw")


def _build(suite: str, scenario: str,
           prepare: Callable[[image.Chroot, image.BaseTree], dict[str, str] | None],
           stages: Callable[[image.BaseTree], Sequence[str]],
           chain_options: dict[str, object] | None = None, *,
           layout: str = "provider", grub_timeout: int = 5, grub_default: str = "provider") -> Built:
    """Build the disk of scenario for suite (a VM target: "trixie",
    "trixie-arm64") in this session's own work directory.

    layout picks how the disk boots (image.LAYOUTS); for the firmware layouts
    GRUB's default entry is pinned to the provider kernel and its menu waits
    grub_timeout seconds (Debian's installed default is 5, cloud images 0);
    grub_default "newest" pins it to the newest kernel instead.
    """
    start = time.monotonic()
    release, arch = image.split_target(suite)
    base = image.base_tree(release, layout, arch)
    work = image.work_dir(f"{suite}-{layout}-{scenario}")
    root = work / "root"
    disk = work / f"{scenario}.img"
    try:
        image.copy_tree(base.path, root)
        chroot = image.Chroot(root, base.archives)
        boot_files: dict[str, Path] = {}
        with chroot.mounted():
            notes = prepare(chroot, base) or {}
            if layout != "provider":
                pinned = base.newest if grub_default == "newest" else base.provider
                notes["grub_cfg"] = image.configure_grub(chroot, pinned, grub_timeout,
                                                         grub_cmdline(image.APPENDS[base.arch]), base.arch)
                boot_files = image.install_boot_loader_files(chroot, layout, work / "boot-files", base.arch)
        image.configure_guest(root, layout, base.arch)
        guest.install_driver(root, stages(base), base.arch)
        image.make_image(root, disk, layout, boot_files)
    finally:
        image.run(["rm", "-rf", "--one-file-system", root], check=False)
    return Built(suite, scenario, disk, base, time.monotonic() - start, notes, chain_options or {},
                 layout, grub_timeout if layout != "provider" else None)


def boot_chain(built: Built, **kwargs: object) -> guest.Chain:
    """Run the guest's chain of stages on built's disk (a fresh UEFI variable
    store for every chain); kwargs go to guest.run_chain."""
    log = built.disk.parent / f"{built.scenario}.serial.log"
    vars_file = image.firmware_vars(built.layout, built.disk.parent / f"{built.scenario}.vars.fd", built.arch)
    kwargs.setdefault("layout", built.layout)
    kwargs.setdefault("arch", built.arch)
    kwargs.setdefault("append", image.APPENDS[built.arch])
    kwargs.setdefault("vars_file", vars_file)
    return guest.run_chain(built.disk, built.base.kernel, built.base.initrd, log, **kwargs)  # type: ignore[arg-type]


def keep_log(chain: guest.Chain, suite: str, step: str) -> Path:
    """Copy the serial log of a failed step under ./test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    dest = ARTIFACTS / f"{suite}-{step}.serial.log"
    shutil.copy2(chain.log, dest)
    return dest


@contextlib.contextmanager
def step(chain: guest.Chain, suite: str, name: str) -> Iterator[None]:
    """Keep the serial log under test-artifacts/ when the assertions inside fail."""
    try:
        yield
    except BaseException as exc:
        path = keep_log(chain, suite, name)
        exc.args = (f"{exc.args[0] if exc.args else exc}\n(serial log kept: {path})", *exc.args[1:])
        raise


# --------------------------------------------------------------------------
# smoke: no kexec-auto at all; proves the harness and the kexec mechanism

def _prepare_smoke(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
    (chroot.root / "var/lib/ka-test").mkdir(parents=True, exist_ok=True)
    chroot.apt_install(f"linux-image-{base.newest}")
    # kexec-auto is not installed: only offered by a local repository for boot 2
    _add_repo(chroot)
    guest.show_on_console(chroot.root)  # what its shutdown load says, once installed
    return {}


def _smoke_stages(base: image.BaseTree) -> list[str]:
    new = base.newest
    return [
        # boot 0: provider kernel; load the newer kernel by hand and kexec into it
        f"""ka_run kexec_load kexec -l /boot/vmlinuz-{new} --initrd=/boot/initrd.img-{new} --reuse-cmdline
ka_file kexec_loaded /sys/kernel/kexec_loaded
ka_do systemctl kexec
""",
        # boot 1: the newer kernel; without kexec-auto a plain reboot is a firmware reboot
        """ka_do systemctl reboot
""",
        # boot 2: provider kernel again; issue 4 step 1: apt install kexec-auto on the
        # running system, then reboot at once
        """start=$(date +%s)
ka_run install env DEBIAN_FRONTEND=noninteractive apt-get install -y -q kexec-auto
ka_result install_seconds $(( $(date +%s) - start ))
ka_file kexec /etc/default/kexec
ka_run unit systemctl is-active kexec-auto-load.service
ka_do reboot
""",
        # boot 3: must be the newest kernel, in the same qemu process
    ] + ([
        # forky's systemd (262) still reads /run/boot-loader-entries/, where
        # kexec-auto publishes the selected kernel for `systemctl kexec`,
        # but has announced its removal: keep checking it there
        "ka_do systemctl kexec\n",
        # boot 4: the newest again, same qemu process
    ] if base.suite == "forky" else [])


def build_smoke(suite: str) -> Built:
    return _build(suite, "smoke", _prepare_smoke, _smoke_stages)


# --------------------------------------------------------------------------
# kexec-auto installed from a local apt repository

REPO_INSIDE = "/srv/ka-repo"
KEXEC_BEFORE = "/var/lib/ka-test/kexec.before"


def _add_repo(chroot: image.Chroot) -> None:
    """Put the .deb in a flat repository inside the tree and preinstall its
    dependencies from the archive (the guest has no network)."""
    deb = package.build_deb(debbuild.suite_of(chroot.root))  # the build for the tree's release
    image.local_repo(chroot.root / REPO_INSIDE.lstrip("/"), [deb])
    (chroot.root / "etc/apt/sources.list.d/ka-repo.list").write_text(
        f"deb [trusted=yes] file:{REPO_INSIDE} ./\n")
    depends = image.run(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    chroot.sh("apt-get update -q")
    chroot.sh(f"apt-get satisfy -y -q {guest.sh_quote(depends)}")
    chroot.sh(f"cp -p /etc/default/kexec {KEXEC_BEFORE} 2>/dev/null || true; mkdir -p /var/lib/ka-test")


def _kexec_file(chroot: image.Chroot) -> str:
    return chroot.sh("cat /etc/default/kexec")


def _prepare_main(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
    (chroot.root / "var/lib/ka-test").mkdir(parents=True, exist_ok=True)
    _add_repo(chroot)
    notes = {"install": chroot.apt_install("kexec-auto")}
    notes["kexec_before_kernels"] = _kexec_file(chroot)
    chroot.apt_install(f"linux-image-{base.newest}")
    notes["kexec_after_newest"] = _kexec_file(chroot)
    chroot.apt_install(f"linux-image-{base.older}")
    notes["kexec_after_older"] = _kexec_file(chroot)
    notes["vmlinuz_link"] = chroot.sh("readlink /vmlinuz || true").strip()
    return notes


#: Everything of kexec-auto that must be gone after a purge (prints the survivors).
TRACES = r"""ka_traces() {
    for p in /etc/default/kexec-auto /var/lib/kexec-auto /usr/bin/kexec-auto \
        /usr/lib/systemd/system-shutdown/kexec-auto /lib/systemd/system-shutdown/kexec-auto \
        /etc/kernel/postinst.d/kexec-auto /etc/kernel/postrm.d/kexec-auto \
        /etc/initramfs/post-update.d/kexec-auto /usr/share/kexec-auto \
        /lib/systemd/system/kexec-auto-load.service /usr/lib/systemd/system/kexec-auto-load.service \
        /run/kexec-auto /run/boot-loader-entries/loader/entries/kexec-auto.conf \
        /run/boot-loader-entries/kexec-auto; do
        { [ -e "$p" ] || [ -L "$p" ]; } && echo "$p"
    done
    # the test image's own apt settings (debimage.cached_tree) are not kexec-auto's
    find / -xdev \( -path /srv/ka-repo -o -path /var/lib/ka-test -o -path /proc \
        -o -path /etc/apt/apt.conf.d/90kexec-auto-tests -o -path /etc/apt/preferences.d/90kexec-auto-tests \) \
        -prune -o -name '*kexec-auto*' -print 2>/dev/null
    find /run -name '*kexec-auto*' 2>/dev/null
    debconf-show kexec-auto 2>/dev/null
    dpkg-query -W -f '${db:Status-Abbrev}\n' kexec-auto 2>/dev/null | grep -v '^un'
}
"""


def _main_stages(base: image.BaseTree) -> list[str]:
    preseed = ("echo 'kexec-auto kexec-auto/enable boolean {value}' | debconf-set-selections\n"
               "ka_run reconfigure dpkg-reconfigure -fnoninteractive kexec-auto\n"
               "ka_run enabled kexec-auto get ENABLED\n")
    return [
        # 0: provider kernel, kexec-auto and the newest then an older kernel installed at build time
        """ka_file kexec /etc/default/kexec
ka_run status kexec-auto status
ka_run unit systemctl is-active kexec-auto-load.service
ka_do reboot
""",
        "ka_do reboot\n",                       # 1: newest; again
        "ka_do systemctl reboot\n",             # 2
        "ka_do shutdown -r now\n",              # 3
        "ka_do systemctl kexec\n",              # 4
        "ka_do coldreboot\n",                   # 5: one firmware reboot
        """ka_result flag $(test -e /no-kexec-reboot && echo present || echo absent)
ka_do reboot
""",                                            # 6: provider after coldreboot
        preseed.format(value="false") + "ka_file kexec /etc/default/kexec\nka_do reboot\n",   # 7
        preseed.format(value="true") + "ka_file kexec /etc/default/kexec\nka_do reboot\n",    # 8
        # 9: newest; kexec -e made to fail (kexec-tools' binary wrapped), so the
        # shutdown hook sees it return and the reboot goes through the firmware
        """mv /usr/sbin/kexec /usr/sbin/kexec.ka-test
cat > /usr/sbin/kexec <<'WRAPPER'
#!/bin/sh
[ "$1" = -e ] && exit 1
exec /usr/sbin/kexec.ka-test "$@"
WRAPPER
chmod 755 /usr/sbin/kexec
ka_do reboot
""",
        # 10: provider; the newest was never started, which is no failed trial
        f"""mv -f /usr/sbin/kexec.ka-test /usr/sbin/kexec
ka_result never_started "$(kexec-auto status 2>&1 | grep -c 'was never started (kexec -e returned at shutdown')"
ka_result failed_boots "$(kexec-auto status 2>&1 | grep -c 'failed to boot')"
ka_result mark "$(kexec-auto list --json | python3 -c 'import json, sys
print(*(k["boot"] for k in json.load(sys.stdin)["kernels"] if k["release"] == "{base.newest}"))')"
ka_run remove env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q linux-image-{base.newest}
ka_file kexec /etc/default/kexec
ka_do reboot
""",                                            # and removed; noninteractive as unattended removals
                                                # are, so linux-check-removal lets it go
        TRACES + f"""ka_run purge env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q kexec-auto
ka_result traces "$(ka_traces)"
ka_run kexec_restored cmp /etc/default/kexec {KEXEC_BEFORE}
ka_do reboot
""",                                            # 11: purged
        TRACES + """ka_result traces "$(ka_traces)"
""",                                            # 12: provider again; traces after a reboot
    ]


def build_main(suite: str) -> Built:
    return _build(suite, "main", _prepare_main, _main_stages)


# --------------------------------------------------------------------------
# helpers for stages that check boot assessment (safety.py, bootpaths.py)

#: stage helpers for boot assessment: JSON on one line, and a bounded wait
#: for kexec-auto-bless.service to have run in this boot
ASSESS_LIB = r"""ka_json() {  # ka_json KEY CMD...: the JSON a command prints, on one line
    key=$1; shift
    ka_result "$key" "$("$@" 2>/dev/null | tr -d '\n')"
}
ka_wait_bless() {
    i=0
    while [ "$(systemctl show -P ExecMainExitTimestampMonotonic kexec-auto-bless.service)" = 0 ] \
        && [ "$(systemctl show -P ActiveState kexec-auto-bless.service)" != failed ]; do
        i=$((i + 1)); [ "$i" -gt 360 ] && break
        sleep 0.5
    done
    ka_result bless "$(systemctl show -P Result kexec-auto-bless.service)" \
        "status=$(systemctl show -P ExecMainStatus kexec-auto-bless.service) waited=$((i / 2))s"
}
"""
