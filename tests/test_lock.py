"""One writer at a time: many kexec-auto processes at once against one
root lose nothing.

The interleavings that lost data are forced: a ``sitecustomize`` module on
PYTHONPATH slows the real processes down at the points where a writer has
read and not yet written (KEXEC_AUTO_TEST_SLOW), so without the lock every
one of these runs loses something.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from conftest import SRC
from kexec_auto import app, assess, bootstate, lock
from kexec_auto.assess import BootState, Mark
from kexec_auto.statefile import dump_state, parse_state

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
RUNNING = "6.1.0-50-cloud-amd64"

SLOWDOWN = '''
import os, time
_slow = os.environ.get("KEXEC_AUTO_TEST_SLOW")
if _slow:
    delay = float(_slow)
    write_delay = float(os.environ.get("KEXEC_AUTO_TEST_WRITE_DELAY", delay / 4))
    mark = os.environ.get("KEXEC_AUTO_TEST_MARK")
    from kexec_auto import app, bootscan, bootstate, files

    def _after(function, touch=False):
        def slow(*args, **kwargs):
            result = function(*args, **kwargs)
            if touch and mark:
                open(mark, "w").close()  # tells the test: read, not yet written
            time.sleep(delay)
            return result
        return slow

    # Each writer reads, then waits before it writes.
    bootstate.read_boot_state = app.read_boot_state = _after(bootstate.read_boot_state)
    bootscan.find_kernels = _after(bootscan.find_kernels, touch=True)
    _write = files.write_atomic
    def write_atomic(*args, **kwargs):
        time.sleep(write_delay)
        return _write(*args, **kwargs)
    files.write_atomic = write_atomic
'''


@pytest.fixture
def env(tmp_path, src_env):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOWDOWN)
    return dict(src_env, PYTHONPATH=f"{site}:{SRC}", KEXEC_AUTO_LOCK_TIMEOUT="120", PYTHONDONTWRITEBYTECODE="1")


def start(root, env, *args, slow="0.4", **extra):
    return subprocess.Popen([sys.executable, "-m", "kexec_auto", *args, "--root", str(root)],
                            env=dict(env, KEXEC_AUTO_TEST_SLOW=slow, **extra), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hook(root, env, kind, release, params, slow="0"):
    hooks = SRC.parent / "hooks" / kind
    return subprocess.Popen(
        ["run-parts", "--report", "--exit-on-error", f"--arg={release}", f"--arg=/boot/vmlinuz-{release}", str(hooks)],
        env=dict(env, KEXEC_AUTO_ROOT=str(root), DEB_MAINT_PARAMS=params, KEXEC_AUTO_TEST_SLOW=slow),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes):
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out, err))
    return results


@pytest.fixture
def machine(machine):
    machine.running(RUNNING)
    for release in (RUNNING, OLD, NEW):
        machine.add_kernel(release)
    return machine


def test_many_writers_at_once_lose_nothing(machine, env):
    """forgets, blesses, sets, updates and kernel hooks, all at once."""
    bad = [f"6.1.0-{n}-cloud-amd64" for n in range(60, 68)]
    marks = {release: Mark("bad", "2026-11-25T12:00:00", "came up elsewhere") for release in bad}
    machine.write(bootstate.BOOT_STATE, dump_state(BootState(marks=marks)))
    keys = {"EXTRA_CMDLINE": "quiet", "EXCLUDE": "*-rt-*", "CMDLINE": "root=/dev/vda ro", "HANDOFF": "false"}
    processes = [start(machine, env, "forget", release) for release in bad]
    processes += [start(machine, env, "bless") for _ in range(2)]
    processes += [start(machine, env, "set", f"{key}={value}") for key, value in keys.items()]
    processes += [start(machine, env, "update") for _ in range(4)]
    processes += [hook(machine, env, "postinst.d", NEW, f"configure {NEW}", slow="0.4") for _ in range(2)]
    results = finish(processes)
    assert [code for code, _, _ in results] == [0] * len(results), results
    state = parse_state(machine.read(bootstate.BOOT_STATE))
    assert state.bad() == {}, "a forget was lost"
    assert state.mark_of(RUNNING) == "good", "the bless was lost"
    config = machine.read("/etc/default/kexec-auto")
    for key, value in keys.items():
        assert f"{key}=" in config, f"set {key} was lost:\n{config}"
    assert not list(machine.file("/etc/default").glob("kexec.kexec-auto-old*")), "a spurious 'edited by hand' copy"
    # `set` changes only the settings; the next update writes them out
    assert subprocess.run([sys.executable, "-m", "kexec_auto", "update", "--root", str(machine)],
                          env=env, capture_output=True).returncode == 0
    assert machine.sourced()["APPEND"] == "root=/dev/vda ro quiet"


def test_concurrent_updates_keep_no_spurious_edited_copy(machine, env):
    assert finish([start(machine, env, "update", slow="0")])[0][0] == 0
    machine.add_kernel("6.12.118+deb12-cloud-amd64")
    # Staggered writers of different contents (the setting changes while
    # they run): each reads the file while another is between writing it
    # and recording what it wrote.
    updates = [start(machine, env, "update", slow=f"{n / 10}", KEXEC_AUTO_TEST_WRITE_DELAY="0.3")
               for n in range(10)]
    for n in range(30):
        machine.config(f"EXTRA_CMDLINE=run{n}\n")
        time.sleep(0.1)
    results = finish(updates)
    assert [code for code, _, _ in results] == [0] * 10, results
    assert not any("edited by hand" in err for _, _, err in results), results
    assert not list(machine.file("/etc/default").glob("kexec.kexec-auto-old*"))
    assert machine.sourced()["KERNEL_IMAGE"] == "/boot/vmlinuz-6.12.118+deb12-cloud-amd64"
    assert finish([start(machine, env, "update", slow="0")])[0][0] == 0
    assert machine.sourced()["APPEND"].endswith(" run29")


def test_a_slow_update_never_writes_back_a_kernel_removed_meanwhile(machine, env):
    """The update read /boot before the kernel was removed; the removal's
    hook must write last."""
    assert finish([start(machine, env, "update", slow="0")])[0][0] == 0
    mark = machine.path.parent / "read-boot"
    slow = start(machine, env, "update", slow="4", KEXEC_AUTO_TEST_MARK=str(mark))
    deadline = time.monotonic() + 120
    while not mark.exists():  # it has read /boot and is deciding
        assert time.monotonic() < deadline and slow.poll() is None, "the slow update never read /boot"
        time.sleep(0.05)
    machine.remove_kernel(NEW)
    removal = hook(machine, env, "postrm.d", NEW, f"remove {NEW}")
    results = finish([slow, removal])
    assert [code for code, _, _ in results] == [0, 0], results
    assert machine.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{OLD}"


def test_bless_racing_forget_loses_neither(machine, env):
    state = BootState(trying=RUNNING, marks={NEW: Mark("bad", "then", "came up elsewhere")})
    machine.write(bootstate.BOOT_STATE, dump_state(state))
    results = finish([start(machine, env, "bless"), start(machine, env, "forget", NEW)])
    assert [code for code, _, _ in results] == [0, 0], results
    state = parse_state(machine.read(bootstate.BOOT_STATE))
    assert (state.mark_of(NEW), state.mark_of(RUNNING), state.trying) == ("untried", "good", None)


def hold_lock(root):
    path = root.file(lock.LOCK_PATH)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def test_the_wait_is_bounded_and_says_who_holds_the_lock(machine, env, src_env):
    assert finish([start(machine, env, "update", slow="0")])[0][0] == 0
    before = machine.read("/etc/default/kexec")
    machine.add_kernel("6.12.118+deb12-cloud-amd64")
    holder = hold_lock(machine)
    try:
        quick = dict(env, KEXEC_AUTO_LOCK_TIMEOUT="1")
        started = time.monotonic()
        (code, out, err), = finish([start(machine, quick, "update", slow="0")])
        assert time.monotonic() - started < 30
        assert code == 1
        assert err == (f"kexec-auto: error: another kexec-auto (pid {os.getpid()}) has held "
                       f"/var/lib/kexec-auto/lock for more than 1 s; nothing was changed, try again later\n")
        # A kernel hook reports it and still lets the kernel install go on.
        (code, out, err), = finish([hook(machine, quick, "postinst.d", "6.12.118+deb12-cloud-amd64", "configure")])
        assert code == 0 and out == ""
        assert "has held /var/lib/kexec-auto/lock for more than 1 s" in err
        assert "(kernel installation continues)" in err
        assert machine.read("/etc/default/kexec") == before
        # Reading needs no lock.
        for args in (["list"], ["status"], ["update", "--dry-run"], ["get", "PIN"]):
            (code, out, err), = finish([start(machine, quick, *args, slow="0")])
            assert code in (0, 3) and "lock" not in err, (args, err)
    finally:
        holder.close()
    (code, out, err), = finish([start(machine, env, "update", slow="0")])
    assert code == 0
    assert machine.sourced()["KERNEL_IMAGE"] == "/boot/vmlinuz-6.12.118+deb12-cloud-amd64"


def test_the_lock_is_reentrant_within_a_process(machine):
    with lock.held(str(machine)):
        with lock.held(str(machine)):
            assert app.update(str(machine)) == 0
        assert assess.BootState() == BootState()
    assert machine.exists(lock.LOCK_PATH)


def test_a_read_only_system_needs_no_lock(machine, monkeypatch):
    import errno

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    assert app.update(str(machine)) == 0
    monkeypatch.setattr(lock.files, "make_dirs", read_only)
    assert app.update(str(machine), quiet=True) == 0  # nothing to write: nothing fails
