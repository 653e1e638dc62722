"""Driving a test guest: stage scripts inside, qemu and the serial log outside.

Inside the image, ka-stage.service (Type=simple, so that it never holds up the
boot it waits for) runs /usr/local/sbin/ka-stage on every boot.  ka-stage waits
for multi-user.target and for kexec-auto-boot.service; in a boot that is being
handed off (shut down for a kexec) it does nothing.  Otherwise it prints
`KA-BOOT seq=N uname=... ` on /dev/ttyS0, bumps the counter in
/var/lib/ka-test/next and sources stage N, which prints
`KA-RESULT seq=N key=value` lines and ends with an action (`ka_do reboot`,
`ka_do systemctl kexec`, ...) announced as `KA-ACTION seq=N cmd=...`.
When no stage N is left it prints KA-END and powers off.

Outside, qemu runs with -no-reboot: a kexec reboot never resets the machine,
so qemu keeps running; a firmware reboot makes qemu exit.  That exit is the
unambiguous sign of a firmware reboot, and the runner then starts qemu again
on the same disk (with the same fixed provider -kernel, like a cloud
provider's firmware would) so the chain of stages goes on.  Every boot is
recorded with the number of the qemu process it happened in.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness import debimage

APPEND = debimage.APPENDS[debimage.HOST_ARCH]  # "root=/dev/vda rw console=ttyS0 panic=5"

#: Multiplies every chain's timeouts: on a host busy with other work, TCG
#: guests boot several times slower (KEXEC_AUTO_TEST_TIMEOUT_SCALE=3).
TIMEOUT_SCALE_ENV = "KEXEC_AUTO_TEST_TIMEOUT_SCALE"

RUNNER = r"""#!/bin/sh
# kexec-auto VM test driver: run the next stage, report on the serial console.
exec </dev/null >/dev/ttyS0 2>&1
dir=/var/lib/ka-test
i=0
until [ "$(systemctl is-active multi-user.target)" = active ]; do
    i=$((i + 1)); [ "$i" -gt 1500 ] && break
    sleep 0.2
done
# Nothing in the boot waits for kexec-auto-boot.service, which may hand this
# boot off to another kernel (systemctl --no-block kexec): let it finish, and
# leave a boot that is being shut down to the next one, stage unused.
i=0
while systemctl list-jobs --no-legend 2>/dev/null | grep -q '[[:space:]]kexec-auto-boot\.service[[:space:]]'; do
    i=$((i + 1)); [ "$i" -gt 1500 ] && break
    sleep 0.2
done
stopping='[[:space:]](kexec|reboot|poweroff|halt)\.target[[:space:]]'
if systemctl list-jobs --no-legend 2>/dev/null | grep -Eq "$stopping" ||
   [ "$(systemctl is-system-running)" = stopping ]; then
    echo "KA-SKIP the boot is being shut down (hand-off)"
    exit 0
fi
n=$(cat "$dir/next" 2>/dev/null || echo 0)
. /usr/local/lib/ka-lib.sh
echo
echo "KA-BOOT seq=$n uname=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime) state=$(systemctl is-system-running)"
if [ ! -f "$dir/stages/$n" ]; then
    echo "KA-END seq=$n"
    sync
    systemctl poweroff
    exit 0
fi
echo $((n + 1)) > "$dir/next"
sync
. "$dir/stages/$n"
# the last stage may end without an action: then the chain is over
if [ -z "$ka_acted" ] && [ ! -f "$dir/stages/$((n + 1))" ]; then
    echo "KA-END seq=$((n + 1))"
    sync
    systemctl poweroff
fi
"""

LIB = r"""# helpers for stage scripts (sourced by ka-stage, $n is the stage number)
ka_result() {  # ka_result KEY VALUE...: one line, spaces kept, newlines flattened
    k=$1; shift
    printf 'KA-RESULT seq=%s %s=%s\n' "$n" "$k" "$(printf '%s' "$*" | tr '\n' '|')"
}
ka_file() {  # ka_file KEY PATH: content of a file, or ABSENT
    if [ -e "$2" ] || [ -L "$2" ]; then ka_result "$1" "$(cat "$2" 2>&1)"; else ka_result "$1" ABSENT; fi
}
ka_run() {  # ka_run KEY CMD...: output and exit status of a command
    key=$1; shift
    out=$("$@" 2>&1); rc=$?
    ka_result "$key.rc" "$rc"
    ka_result "$key.out" "$out"
}
ka_do() {  # ka_do CMD...: the action that ends this boot
    ka_acted=1
    printf 'KA-ACTION seq=%s cmd=%s\n' "$n" "$*"
    sync
    "$@"
    rc=$?
    printf 'KA-ACTION-RETURNED seq=%s rc=%s\n' "$n" "$rc"
}
"""

UNIT = """[Unit]
Description=kexec-auto VM test stage runner

[Service]
Type=simple
ExecStart=/usr/local/sbin/ka-stage
StandardInput=null

[Install]
WantedBy=multi-user.target
"""


KEXEC_AUTO_UNITS = ("kexec-auto-boot.service", "kexec-auto-load.service")

CONSOLE_DROPIN = """[Service]
# kexec-auto tests: show kexec-auto's messages on the serial console too
StandardOutput=journal+console
StandardError=journal+console
"""


def show_on_console(tree: Path) -> None:
    """Drop-ins that put kexec-auto's units' messages on the serial console
    (also for a kexec-auto that the guest installs later)."""
    for unit in KEXEC_AUTO_UNITS:
        dropin = tree / f"etc/systemd/system/{unit}.d/ka-test-console.conf"
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(CONSOLE_DROPIN)


def enable_unit(tree: Path, unit: str) -> None:
    """What `systemctl enable` does for a unit wanted by multi-user.target:
    unit (its absolute path in the guest) linked into the target's wants."""
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / Path(unit).name
    link.unlink(missing_ok=True)
    link.symlink_to(unit)


def on_console(script: str, arch: str) -> str:
    """script (written for amd64's /dev/ttyS0) writing to arch's serial console.

    >>> on_console("echo x >/dev/ttyS0", "arm64")
    'echo x >/dev/ttyAMA0'
    """
    return script.replace("/dev/ttyS0", f"/dev/{debimage.ARCHES[arch].console}")


def install_driver(tree: Path, stages: Sequence[str], arch: str = debimage.HOST_ARCH) -> None:
    """Put the stage runner and the stage scripts (one per boot) into tree."""
    (tree / "usr/local/sbin").mkdir(parents=True, exist_ok=True)
    (tree / "usr/local/lib").mkdir(parents=True, exist_ok=True)
    runner = tree / "usr/local/sbin/ka-stage"
    runner.write_text(on_console(RUNNER, arch))
    runner.chmod(0o755)
    (tree / "usr/local/lib/ka-lib.sh").write_text(LIB)
    (tree / "etc/systemd/system/ka-stage.service").write_text(UNIT)
    enable_unit(tree, "/etc/systemd/system/ka-stage.service")
    state = tree / "var/lib/ka-test"
    (state / "stages").mkdir(parents=True, exist_ok=True)
    (state / "next").write_text("0\n")
    for number, script in enumerate(stages):
        (state / "stages" / str(number)).write_text(on_console(script, arch))


@dataclass
class Boot:
    """One boot of the guest as seen on the serial console."""
    seq: int
    uname: str
    qemu_run: int          # which qemu process (0, 1, ...) this boot happened in
    seen_at: float         # host monotonic time the KA-BOOT line appeared
    uptime: float          # guest kernel uptime at that moment
    results: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    action_at: float | None = None


@dataclass
class Chain:
    """What a run of the stage chain produced."""
    log: Path
    boots: list[Boot] = field(default_factory=list)
    ended: bool = False
    qemu_runs: int = 0
    qemu_started: list[float] = field(default_factory=list)
    qemu_exited: list[float] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    #: (host monotonic time, qemu run, line) of serial lines matching MARKS
    marks: list[tuple[float, int, str]] = field(default_factory=list)

    def boot(self, seq: int) -> Boot:
        for boot in self.boots:
            if boot.seq == seq:
                return boot
        raise AssertionError(f"stage {seq} never booted (chain error: {self.error}); "
                             f"boots seen: {[(b.seq, b.uname, b.qemu_run) for b in self.boots]}")


LINE = re.compile(r"(KA-[A-Z-]+) seq=(\d+)(?: (.*))?$")

#: Serial lines whose host arrival time is kept (Chain.marks): where a
#: reboot goes through firmware, boot loader and kernel.
MARKS = re.compile(r"Linux version \S+|reboot: Restarting system|reboot: Power down"
                   r"|kexec_core: Starting new kernel|Booting `[^']*'|Welcome to GRUB|BdsDxe: \S+ \S+"
                   # systemd's console status: coloured, and cut to the
                   # console's width ("kexec-auto-load.s…lled kernel ...")
                   r"|Stopp(?:ing|ed) (?:\x1b\[[0-9;]*m)?(?:kexec-auto-load\.s|Load the newest installed kernel)"
                   r"|KA-UP\b|KA-BLESSED\b")


def qemu_command(disk: Path, kernel: Path | None, initrd: Path | None, log: Path,
                 append: str = APPEND, memory: int = 1536, layout: str = "provider",
                 vars_file: Path | None = None, extra: Sequence[str] = (),
                 arch: str = debimage.HOST_ARCH) -> list[str]:
    return debimage.qemu_command(layout, disk, log, kernel=kernel, initrd=initrd, append=append,
                                 vars_file=vars_file, memory=memory, extra=extra, arch=arch)


def run_chain(disk: Path, kernel: Path | None, initrd: Path | None, log: Path, *,
              boot_timeout: float = 240, total_timeout: float = 1200,
              max_qemu_runs: int = 6, append: str = APPEND,
              appends: Sequence[str] = (), layout: str = "provider",
              vars_file: Path | None = None, qemu_args: Sequence[str] = (),
              arch: str = debimage.HOST_ARCH) -> Chain:
    """Boot disk until the guest's stages are all done (KA-END and power off).

    appends, when given, is the kernel command line of each qemu run in turn
    (the last one repeats); otherwise every run gets append.  Both only
    matter for the "provider" layout, whose qemu boots kernel and initrd
    itself; the other layouts boot through firmware and GRUB (vars_file:
    the VM's UEFI variable store).  qemu_args are added to every qemu run
    (devices, e.g. ["-device", "i6300esb"]).  arch is the guest's Debian
    architecture (qemu's emulator and board).

    $KEXEC_AUTO_TEST_TIMEOUT_SCALE and arch's slowdown multiply both timeouts.
    Never raises for guest behaviour: timeouts and surprises land in
    Chain.error, with the whole serial log in `log`.  Every qemu started here
    is killed before returning.
    """
    scale = float(os.environ.get(TIMEOUT_SCALE_ENV) or 1) * debimage.ARCHES[arch].slowdown
    boot_timeout, total_timeout = boot_timeout * scale, total_timeout * scale
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    chain = Chain(log)
    start = time.monotonic()
    offset = 0
    pending = ""
    current: Boot | None = None
    last_event = start
    proc: subprocess.Popen[bytes] | None = None
    try:
        while True:
            if proc is None:
                if chain.qemu_runs >= max_qemu_runs:
                    chain.error = f"qemu exited {chain.qemu_runs} times without KA-END"
                    break
                run_append = appends[min(chain.qemu_runs, len(appends) - 1)] if appends else append
                booted = f"-kernel {kernel.name}" if layout == "provider" and kernel else f"{layout} firmware"
                with open(log, "a") as out:
                    out.write(f"\n=== host: qemu run {chain.qemu_runs} starts "
                              f"({booted}) at +{time.monotonic() - start:.1f} s ===\n")
                cmd = qemu_command(disk, kernel, initrd, log, run_append, layout=layout,
                                   vars_file=vars_file, extra=qemu_args, arch=arch)
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                chain.qemu_runs += 1
                chain.qemu_started.append(time.monotonic())
                last_event = time.monotonic()
            exited = proc.poll() is not None
            with open(log, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
            offset += len(data)
            pending += data.decode("utf-8", "replace")
            *lines, pending = pending.split("\n")
            now = time.monotonic()
            for raw in lines:
                line = raw.strip("\r")
                mark = MARKS.search(line)
                if mark:
                    chain.marks.append((now, chain.qemu_runs - 1, mark.group(0)))
                match = LINE.search(line)
                if not match:
                    continue
                kind, seq, rest = match.group(1), int(match.group(2)), match.group(3) or ""
                last_event = now
                if kind == "KA-BOOT":
                    fields = dict(part.split("=", 1) for part in rest.split() if "=" in part)
                    current = Boot(seq, fields.get("uname", "?"), chain.qemu_runs - 1, now,
                                   float(fields.get("uptime", "nan")))
                    chain.boots.append(current)
                elif kind == "KA-RESULT" and current is not None and "=" in rest:
                    key, value = rest.split("=", 1)
                    current.results[key] = value
                elif kind == "KA-ACTION" and current is not None:
                    current.action = rest.removeprefix("cmd=")
                    current.action_at = now
                elif kind == "KA-ACTION-RETURNED" and current is not None:
                    rc = rest.removeprefix("rc=")
                    current.results["action.rc"] = rc
                    if rc != "0":
                        chain.error = f"stage {seq}: action {current.action!r} failed with status {rc}"
                elif kind == "KA-END":
                    chain.ended = True
            if exited:
                chain.qemu_exited.append(now)
                err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
                with open(log, "a") as out:
                    out.write(f"\n=== host: qemu run {chain.qemu_runs - 1} exited "
                              f"with status {proc.returncode} {err.strip()} at +{now - start:.1f} s ===\n")
                status, proc = proc.returncode, None
                if chain.ended:
                    break
                if status != 0:
                    # a guest reset under -no-reboot exits with 0; anything else is qemu failing
                    chain.error = f"qemu failed with status {status}: {err.strip()}"
                    break
                continue
            if chain.error:
                break
            if now - start > total_timeout:
                chain.error = f"chain took longer than {total_timeout}s"
                break
            if now - last_event > boot_timeout:
                chain.error = (f"no progress on the serial console for {boot_timeout}s "
                               f"after stage {current.seq if current else None}")
                break
            time.sleep(0.1)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
            with open(log, "a") as out:
                out.write(f"\n=== host: qemu run {chain.qemu_runs - 1} killed ===\n")
    chain.seconds = time.monotonic() - start
    _write_timeline(chain, start)
    return chain


def _write_timeline(chain: Chain, start: float) -> None:
    """When every boot and qemu run happened, in seconds from the chain's
    start, beside the serial log (for timings after the run)."""
    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - start, 1)
    timeline = {
        "seconds": round(chain.seconds, 1),
        "qemu_started": [rel(t) for t in chain.qemu_started],
        "qemu_exited": [rel(t) for t in chain.qemu_exited],
        "boots": [{"seq": b.seq, "uname": b.uname, "qemu_run": b.qemu_run, "seen_at": rel(b.seen_at),
                   "uptime": b.uptime, "action": b.action, "action_at": rel(b.action_at),
                   "episode": b.results.get("episode")} for b in chain.boots],
    }
    chain.log.with_suffix(".times.json").write_text(json.dumps(timeline, indent=1) + "\n")


def sh_quote(value: str) -> str:
    return shlex.quote(value)
