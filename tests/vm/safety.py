"""VM scenarios of the trial boot's safety net: a newest kernel broken in
each way a kernel can fail to come up, on a guest whose command line is a
Debian cloud image's (no panic=), with kexec-auto's defaults.

One chain of boots per suite walks through several failure modes in turn,
so that the boots are shared.  For each mode the newest kernel N is broken
(and, if need be, its mark forgotten so that it is tried again), then the
guest reboots into it and every failed trial must bring the machine back to
the provider kernel P by itself.  After TRIES failures N is marked bad and
the next reboot lands in the next newest kernel O, where the next mode
starts.  The chain ends with N repaired: a trial that succeeds, after which
nothing of the safety net may be left.

The modes:
  panic       N's initrd makes the kernel panic ("No working init found")
  noroot      N's initrd has no virtio_blk: initramfs-tools cannot find root
  emergency   an fstab entry N cannot mount (its vfat module is gone):
              systemd enters emergency mode
  deadline    a unit that never finishes starting under N: the boot never
              completes
  earlyhang   N's initrd hangs early (an init-premount script that sleeps
              forever): no panic, no shell, no systemd; only the watchdogs
              that kexec-auto's init-top script started reset the machine
  kexechang   N's initrd hangs at the first line of its /init, before any
              script or module: only a hardware watchdog that the kernel
              before the kexec kept armed through it resets the machine
              (needs a watchdog device in the VM and its driver in P and O)
  softlockup  a module that spins with preemption off under N (the kernel
              hangs; timer interrupts still run)
  hardlockup  a module that spins with interrupts off under N (only a
              hardware watchdog can reset the machine: needs a watchdog
              device in the VM and its driver in N)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import guest, image, scenarios

KA = "/var/lib/ka-test"
MODES = ("panic", "noroot", "earlyhang", "kexechang", "emergency", "deadline", "softlockup", "hardlockup")
#: what `kexec-auto status` must give in the reason, per mode
REASONS = {
    "panic": ("it never reached its userspace",),
    "noroot": ("it never reached its userspace",),
    "earlyhang": ("it never reached its userspace",),
    "kexechang": ("it never reached its userspace",),
    "emergency": ("entered emergency mode (failed: ", "ka\\x2dfat.mount"),
    "deadline": ("did not complete its boot within @DEADLINE@ s (still waiting for: ", "ka-hang.service (start)"),
    "softlockup": ("it had started its userspace",),
    "hardlockup": ("it had started its userspace",),
}
#: TRIAL_TIMEOUT set for the deadline mode (the default is 300).  With the
#: hand-off, the reset that ends N's trial hands off to O at once, before
#: any stage can set the default back, so O's trial gets it too: there it
#: is the good trial's deadline, which a boot under TCG fits in.
DEADLINE = 120
#: TRIAL_TIMEOUT of an early hang without the hand-off (the least there is):
#: no systemd runs, so only the watchdogs end that trial, 60 s after it
EARLY_DEADLINE = 30
DEFAULT_TRIES = 2
HANG_SOURCE = Path(__file__).resolve().parent / "ka_hang"


@dataclass(frozen=True)
class Plan:
    modes: tuple[str, ...]
    tries: int = 2  # kexec-auto's default
    handoff: bool = False
    watchdog_device: bool = False  # -device i6300esb
    #: the final, good trial waits past its deadline and the backstop
    survive: bool = False

    @property
    def weight(self) -> int:
        """Rough length of the chain, to start the longest first."""
        return 2 + len(self.modes) * (1 + self.tries)

    @property
    def deadline(self) -> int:
        """TRIAL_TIMEOUT of the trials of the deadline and lockup modes
        (a hang is reset 60 s after the deadline)."""
        return GOOD_DEADLINE if self.handoff else DEADLINE

    @property
    def early_deadline(self) -> int:
        """TRIAL_TIMEOUT of the early hang's trials."""
        return GOOD_DEADLINE if self.handoff else EARLY_DEADLINE

    def reasons(self, mode: str) -> tuple[str, ...]:
        """What `kexec-auto status` must give in the reason for mode."""
        return tuple(r.replace("@DEADLINE@", str(self.deadline)) for r in REASONS[mode])

    @property
    def name(self) -> str:
        return "safety-" + ("handoff-" if self.handoff else "") + "-".join(self.modes) + f"-t{self.tries}"


def hang_module(base: image.BaseTree, release: str) -> Path:
    """ka_hang.ko built for ``release`` (cached): linux-headers in a copy of
    the base tree, natively."""
    import hashlib

    source = (HANG_SOURCE / "ka_hang.c").read_bytes() + (HANG_SOURCE / "Kbuild").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:10]
    cached = image.cache_dir() / "modules" / f"ka_hang-{release}-{digest}.ko"
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with image.locked(cached.parent / f"{release}.lock"):
        if cached.exists():
            return cached
        work = image.work_dir(f"ka-hang-{release}")
        root = work / "root"
        try:
            image.copy_tree(base.path, root)
            chroot = image.Chroot(root, base.archives)
            with chroot.mounted():
                chroot.apt_install("--no-install-recommends", f"linux-headers-{release}", "gcc", "make",
                                   "libc6-dev", timeout=1200)
                shutil.copytree(HANG_SOURCE, root / "tmp/ka_hang")
                chroot.sh(f"make -C /lib/modules/{release}/build M=/tmp/ka_hang modules", timeout=600)
            shutil.copy2(root / "tmp/ka_hang/ka_hang.ko", cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").rename(cached)
        finally:
            image.run(["rm", "-rf", "--one-file-system", work], check=False)
    return cached


def _noroot_initrd(chroot: image.Chroot, release: str) -> None:
    """An initrd of ``release`` without the storage driver of the root disk."""
    conf = "/tmp/ka-initramfs-conf"
    chroot.sh(f"""rm -rf {conf}; mkdir -p {conf}/conf.d {conf}/scripts {conf}/hooks
sed 's/^MODULES=.*/MODULES=list/' /etc/initramfs-tools/initramfs.conf > {conf}/initramfs.conf
: > {conf}/modules
mkinitramfs -d {conf} -o {KA}/initrd-noroot.img {release}
rm -rf {conf}""", timeout=600)
    listing = chroot.sh(f"lsinitramfs {KA}/initrd-noroot.img")
    assert "virtio_blk" not in listing, "the broken initrd still holds virtio_blk"


#: an init-premount script that hangs (it runs after kexec-auto's init-top one)
EARLY_HANG = """#!/bin/sh
[ "${1-}" = prereqs ] && exit 0
echo "ka-test: hanging in the initramfs"
while :; do sleep 1; done
"""


def _initrd_with(chroot: image.Chroot, release: str, path: str, text: str, name: str) -> str:
    """KA/initrd-NAME.img: an initrd of ``release`` built with the
    initramfs-tools file ``path`` (below /etc/initramfs-tools) holding
    ``text`` for that build only; its path inside the tree."""
    extra = chroot.root / "etc/initramfs-tools" / path
    extra.parent.mkdir(parents=True, exist_ok=True)
    extra.write_text(text)
    extra.chmod(0o755)
    image_path = f"{KA}/initrd-{name}.img"
    try:
        chroot.sh(f"mkinitramfs -o {image_path} {release}", timeout=600)
    finally:
        extra.unlink()
    return image_path


def _earlyhang_initrd(chroot: image.Chroot, release: str) -> None:
    """An initrd of ``release`` that hangs in init-premount."""
    built = _initrd_with(chroot, release, "scripts/init-premount/ka-hang", EARLY_HANG, "earlyhang")
    listing = chroot.sh(f"lsinitramfs {built}")
    for needed in ("scripts/init-premount/ka-hang", "scripts/init-top/kexec-auto",
                   "usr/lib/kexec-auto/trial-watchdog", "/softdog.ko"):
        assert needed in listing, f"the early-hang initrd has no {needed}"


#: an initramfs-tools hook that makes the image's /init hang at its first line
KEXEC_HANG_HOOK = r"""#!/bin/sh
[ "${1-}" = prereqs ] && exit 0
sed -i '1a echo "ka-test: hanging before the initramfs runs anything"; while :; do sleep 1; done' "$DESTDIR/init"
"""


def _kexechang_initrd(chroot: image.Chroot, release: str) -> None:
    """An initrd of ``release`` whose /init hangs before it does anything."""
    built = _initrd_with(chroot, release, "hooks/ka-kexechang", KEXEC_HANG_HOOK, "kexechang")
    head = chroot.sh(f"rm -rf /tmp/ka-un; unmkinitramfs {built} /tmp/ka-un; "
                     "head -n 3 $(ls /tmp/ka-un/init /tmp/ka-un/main/init 2>/dev/null | head -n 1); rm -rf /tmp/ka-un")
    assert "ka-test: hanging before the initramfs runs anything" in head, head


def _prepare(plan: Plan):
    def prepare(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
        root = chroot.root
        (root / KA.lstrip("/")).mkdir(parents=True, exist_ok=True)
        scenarios._add_repo(chroot)
        if plan.handoff:
            chroot.sh("echo 'kexec-auto kexec-auto/handoff boolean true' | debconf-set-selections")
        notes = {"install": chroot.apt_install("kexec-auto")}
        if plan.tries != DEFAULT_TRIES:
            chroot.sh(f"kexec-auto set TRIES={plan.tries}")
        chroot.apt_install(f"linux-image-{base.newest}")
        chroot.apt_install(f"linux-image-{base.older}")
        if plan.watchdog_device:
            # the system bus, as Debian's cloud images have it: the kernel
            # before a trial sets systemd's reboot and kexec watchdogs over it
            chroot.apt_install("--no-install-recommends", "dbus")
        new = base.newest
        chroot.sh(f"cp -p /boot/initrd.img-{new} {KA}/initrd-good.img")
        (root / KA.lstrip("/") / "panic-initrd.img").write_bytes(image.panicking_initrd())
        if "noroot" in plan.modes:
            _noroot_initrd(chroot, new)
        if "earlyhang" in plan.modes:
            _earlyhang_initrd(chroot, new)
        if "kexechang" in plan.modes:
            _kexechang_initrd(chroot, new)
        # kexec-auto's initramfs hook is in the initrd of N that the other
        # modes boot (the package's trigger rebuilt it)
        notes["initrd_listing"] = chroot.sh(f"lsinitramfs {KA}/initrd-good.img | grep -e kexec-auto -e softdog")
        if "emergency" in plan.modes:
            image.run(["mkfs.fat", "-C", root / KA.lstrip("/") / "fat.img", "1024"])
            (root / "mnt/ka-fat").mkdir(parents=True, exist_ok=True)
        if {"softlockup", "hardlockup"} & set(plan.modes):
            shutil.copy2(hang_module(base, new), root / KA.lstrip("/") / "ka_hang.ko")
        units = root / "etc/systemd/system"
        # A service that never finishes starting, under N only.
        (units / "ka-hang.service").write_text(f"""[Unit]
Description=kexec-auto test: a unit that hangs under {new}
ConditionKernelVersion={new}

[Service]
Type=oneshot
ExecStart=/bin/sleep infinity
TimeoutStartSec=infinity
""")
        # A kernel hang under N, once the boot assessment saw its userspace.
        (units / "ka-freeze.service").write_text(f"""[Unit]
Description=kexec-auto test: hang the kernel under {new}
ConditionKernelVersion={new}
After=kexec-auto-load.service kexec-auto-boot.service

[Service]
Type=oneshot
EnvironmentFile={KA}/freeze.args
ExecStart=/sbin/insmod {KA}/ka_hang.ko $ARGS
""")
        notes["handoff"] = chroot.sh("kexec-auto get HANDOFF").strip()
        notes["tries"] = chroot.sh("kexec-auto get TRIES").strip()
        notes["kexec_built"] = chroot.sh("cat /etc/default/kexec")
        return notes
    return prepare


LIB = r"""
N=@NEW@
ka_repair() {  # every break undone: N boots again
    cp {KA}/initrd-good.img /boot/initrd.img-$N
    if [ -d {KA}/fat-modules ]; then mv {KA}/fat-modules /lib/modules/$N/kernel/fs/fat; depmod $N; fi
    sed -i '/ka-fat/d' /etc/fstab
    rm -f /etc/systemd/system/multi-user.target.wants/ka-hang.service \
          /etc/systemd/system/multi-user.target.wants/ka-freeze.service
    kexec-auto set TRIAL_TIMEOUT=300 >/dev/null
}
ka_break() {  # ka_break MODE: N fails to come up that way
    ka_repair
    case $1 in
        panic) cp {KA}/panic-initrd.img /boot/initrd.img-$N ;;
        noroot) cp {KA}/initrd-noroot.img /boot/initrd.img-$N ;;
        earlyhang|kexechang)
            kexec-auto set TRIAL_TIMEOUT=@EARLY_DEADLINE@ >/dev/null
            cp {KA}/initrd-$1.img /boot/initrd.img-$N ;;
        emergency)
            mv /lib/modules/$N/kernel/fs/fat {KA}/fat-modules; depmod $N
            echo "{KA}/fat.img /mnt/ka-fat vfat loop 0 0" >> /etc/fstab ;;
        deadline)
            kexec-auto set TRIAL_TIMEOUT=@DEADLINE@ >/dev/null
            ln -sf /etc/systemd/system/ka-hang.service /etc/systemd/system/multi-user.target.wants/ ;;
        softlockup|hardlockup)
            kexec-auto set TRIAL_TIMEOUT=@DEADLINE@ >/dev/null
            if [ "$1" = hardlockup ]; then echo ARGS=irqs_off=1; else echo ARGS=irqs_off=0; fi > {KA}/freeze.args
            ln -sf /etc/systemd/system/ka-freeze.service /etc/systemd/system/multi-user.target.wants/ ;;
    esac
    systemctl daemon-reload
    kexec-auto forget $N >/dev/null 2>&1
    sync
}
ka_report() {
    ka_wait_bless
    ka_file cmdline /proc/cmdline
    ka_file panic /proc/sys/kernel/panic
    ka_json status_json kexec-auto status --json
    ka_json list kexec-auto list --json
    ka_file kexec /etc/default/kexec
}
""".replace("{KA}", KA)

NO_TRACE = r"""ka_wait_bless
ka_result trace_panic "$(cat /proc/sys/kernel/panic)"
ka_result trace_watchdog "$(systemctl show -P RuntimeWatchdogUSec)"
ka_result trace_watchdog_dropin "$(ls /run/systemd/system.conf.d 2>/dev/null)"
ka_result trace_softdog "$(grep -c '^softdog ' /proc/modules)"
ka_result trace_trial_watchdog "$(cat /run/kexec-auto/trial-watchdog 2>/dev/null)"
ka_result trace_watchdog_states "$(cat /sys/class/watchdog/*/state 2>/dev/null | sort | uniq -c | tr -s ' ')"
ka_result trace_units "$(systemctl list-units --all --plain --no-legend 'kexec-auto-trial*' 'kexec-auto-fail-trial*' \
    | awk '{print $1 "=" $3 "/" $4}')"
ka_result trace_bless_result "$(systemctl show -P Result kexec-auto-bless.service)"
# systemd was not reloaded: the generator's units are still there, and do nothing
ka_result trace_generated "$(ls /run/systemd/generator 2>/dev/null | grep -c kexec-auto)"
systemctl start kexec-auto-fail-trial@deadline.service kexec-auto-fail-trial@emergency.service \
    kexec-auto-trial-watchdog.service
ka_result trace_conditions "$(systemctl show -P ConditionResult kexec-auto-fail-trial@deadline.service \
    kexec-auto-fail-trial@emergency.service kexec-auto-trial-watchdog.service | tr '\n' ' ')"
ka_result trace_after_start "$(cat /run/kexec-auto/trial-watchdog 2>/dev/null; grep -c '^softdog ' /proc/modules)"
# CPU time of kexec-auto's units in this trial boot (systemd's accounting),
# and of the whole boot so far (/proc/stat, in USER_HZ ticks: 1/100 s)
ka_result cpu_units "$(for u in kexec-auto-boot kexec-auto-bless kexec-auto-trial-watchdog kexec-auto-load; do
    echo "$u=$(systemctl show -P CPUUsageNSec $u.service)"; done | tr '\n' ' ')"
ka_result cpu_total_ticks "$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat)"
ka_result daemon_reloads "$(journalctl -b -o cat _PID=1 | grep -c -e '^Reloading' -e 'Reloading requested')"
"""


#: the deadline of the final, good trial, and of every trial through the
#: hand-off: short, but a TCG boot fits in it (about 60 s to bless)
GOOD_DEADLINE = 150
#: the good trial is still running well after its deadline and the backstop
SURVIVE = r"""i=0
while [ "$(cut -d. -f1 /proc/uptime)" -lt @SURVIVE@ ] && [ "$i" -lt 600 ]; do sleep 1; i=$((i + 1)); done
ka_result survived_uptime "$(cut -d' ' -f1 /proc/uptime)"
"""


def _stages(plan: Plan):
    """Without hand-off: stage 0 runs in P; per mode, one stage breaks N and
    reboots into it, then one stage in P per failed trial reboots again,
    the last one into O.  With hand-off: stage 0 runs in N (the hand-off at
    the first power-on); per mode, a stage breaks N and power-cycles
    (coldreboot): P hands off to N, which fails, the reset brings P back,
    which hands off to O, where the next stage runs.  Every stage after a
    failed trial reboots: into N once more while it has tries left, else
    (N bad) into O, through kexec, where the next mode starts."""
    def stages(base: image.BaseTree) -> list[str]:
        lib = (scenarios.ASSESS_LIB + LIB).replace("@NEW@", base.newest).replace("@DEADLINE@", str(plan.deadline)) \
            .replace("@EARLY_DEADLINE@", str(plan.early_deadline))
        # the boot assessment runs in kexec-auto-boot.service, the load in kexec-auto-load.service
        journal = ("ka_run journal journalctl -b --no-pager -o cat -u kexec-auto-boot.service"
                   " -u kexec-auto-load.service\n")
        out: list[str] = []
        for mode in plan.modes:
            first = "coldreboot" if plan.handoff else "reboot"
            out.append(lib + f"ka_result episode {mode}:start\nka_report\nka_break {mode}\nka_do {first}\n")
            for attempt in range(1, plan.tries + 1):
                last = attempt == plan.tries
                # after failed trial number `attempt`: in P, or in O with the hand-off
                state = "bad" if last else f"failed{attempt}"
                # leaving N: the next trial (of O) gets the default deadline again
                reset = "kexec-auto set TRIAL_TIMEOUT=300 >/dev/null\n" if last else ""
                # then a reboot: into N while it has tries left, else (N bad)
                # into O, through kexec, where the next mode starts
                out.append(lib + f"ka_result episode {mode}:{state}\nka_report\n" + journal + reset
                           + "ka_do reboot\n")
        # repair N; the next reboot is a trial of N that succeeds
        # (with a short deadline, which the good trial must outlive)
        out.append(lib + "ka_result episode repaired\nka_report\nka_repair\n"
                   f"kexec-auto set TRIAL_TIMEOUT={GOOD_DEADLINE} >/dev/null\n"
                   f"kexec-auto forget {base.newest} >/dev/null 2>&1\nsync\nka_do reboot\n")
        out.append(lib + "ka_result episode good-trial\nka_report\n" + NO_TRACE
                   + (SURVIVE.replace("@SURVIVE@", str(GOOD_DEADLINE + 70)) if plan.survive else "")
                   + ("ka_do coldreboot\n" if plan.handoff else ""))
        if plan.handoff:
            # the last power-on has kexec_auto.handoff=0: it stays in P
            out.append(lib + "ka_result episode handoff-off\nka_report\n"
                       "ka_run journal journalctl -b --no-pager -o cat -u kexec-auto-boot.service\n")
        return out
    return stages


HANDOFF_OFF = "kexec_auto.handoff=0"


def qemu_runs(plan: Plan) -> int:
    """qemu processes the chain starts: a firmware reset per failed trial,
    and with the hand-off the cold reboot before each mode's first failure
    and the last one, with the hand-off turned off."""
    if plan.handoff:
        return 1 + len(plan.modes) * (1 + plan.tries) + 1
    return 1 + len(plan.modes) * plan.tries


def cloud_append(arch: str) -> str:
    """The provider's command line, a Debian cloud image's kind (no panic=,
    root read-only until systemd remounts it), on arch's serial console.

    >>> cloud_append("amd64"), cloud_append("arm64")
    ('root=/dev/vda ro console=ttyS0,115200', 'root=/dev/vda ro console=ttyAMA0,115200')
    """
    return f"root=/dev/vda ro console={image.ARCHES[arch].console},115200"


def build(suite: str, plan: Plan) -> scenarios.Built:
    """The chain's disk for suite (a VM target: "trixie", "trixie-arm64")."""
    release, arch = image.split_target(suite)
    if {"softlockup", "hardlockup"} & set(plan.modes):
        base = image.base_tree(release, arch=arch)
        hang_module(base, base.newest)
    qemu_args = ["-device", "i6300esb"] if plan.watchdog_device else []
    failures = len(plan.modes) * plan.tries
    append = cloud_append(arch)
    options: dict[str, object] = {
        "append": append, "qemu_args": qemu_args, "boot_timeout": 420,
        "total_timeout": 1200 + 600 * failures, "max_qemu_runs": qemu_runs(plan) + 1}
    if plan.handoff:
        options["appends"] = [append] * (qemu_runs(plan) - 1) + [f"{append} {HANDOFF_OFF}"]
    return scenarios._build(suite, plan.name, _prepare(plan), _stages(plan), options)


def chain_boots(chain: guest.Chain) -> list[tuple[int, str, int, str]]:
    return [(b.seq, b.uname, b.qemu_run, b.results.get("episode", "")) for b in chain.boots]


def qemu_run_log(chain: guest.Chain, run: int) -> str:
    text = chain.log.read_text(errors="replace")
    start = text.find(f"=== host: qemu run {run} starts")
    end = text.find(f"=== host: qemu run {run + 1} starts")
    return text[start:end if end != -1 else None]


def serial_between(chain: guest.Chain, seq_from: int, seq_to: int) -> str:
    """The serial log between two stage boots."""
    text = chain.log.read_text(errors="replace")
    start = text.find(f"KA-BOOT seq={seq_from} ")
    end = text.find(f"KA-BOOT seq={seq_to} ")
    return text[start:end if end != -1 else None]


def modes_for(suite: str, names: Sequence[str]) -> tuple[str, ...]:
    return tuple(names)


def recovery_times(chain: guest.Chain, plan: Plan) -> list[tuple[str, int, float, float]]:
    """Per failed trial: (mode, attempt, seconds from the reboot into the
    trial kernel to the firmware reset that ended it, seconds from that
    reboot to the next stage running in a working kernel)."""
    boots = {b.results.get("episode", ""): b for b in chain.boots}
    times = []
    for mode in plan.modes:
        for attempt in range(1, plan.tries + 1):
            before = boots.get(f"{mode}:start" if attempt == 1 else f"{mode}:failed{attempt - 1}")
            after = boots.get(f"{mode}:{'bad' if attempt == plan.tries else f'failed{attempt}'}")
            if before is None or after is None or before.action_at is None:
                continue
            # the reboot into the trial kernel happens in qemu run `run` (with the
            # hand-off after a cold reboot: in the next one, from its start)
            run = before.qemu_run + (1 if plan.handoff and attempt == 1 else 0)
            began = before.action_at if run == before.qemu_run else chain.qemu_started[run]
            if run + 1 >= len(chain.qemu_started):
                continue
            times.append((mode, attempt, chain.qemu_started[run + 1] - began, after.seen_at - began))
    return times
