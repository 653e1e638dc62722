"""The real hook files, run by run-parts exactly as a kernel package does:
DEB_MAINT_PARAMS="$*" run-parts --report --exit-on-error --arg=$version --arg=$image DIR
"""

import subprocess
import sys

import pytest

from conftest import REPO

HOOKS = REPO / "hooks"
NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"


def run_parts(root, kind, release, params, env, extra_env=None, timeout=30):
    env = dict(env, KEXEC_AUTO_ROOT=str(root))
    if params is None:
        env.pop("DEB_MAINT_PARAMS", None)
    else:
        env["DEB_MAINT_PARAMS"] = params
    env.update(extra_env or {})
    second = f"/boot/initrd.img-{release}" if kind == "post-update.d" else f"/boot/vmlinuz-{release}"
    return subprocess.run(
        ["run-parts", "--report", "--exit-on-error", f"--arg={release}", f"--arg={second}", str(HOOKS / kind)],
        stdin=subprocess.PIPE, capture_output=True, text=True, env=env, timeout=timeout,
    )


@pytest.fixture
def machine(machine):
    machine.add_kernel(OLD)
    return machine


def kernel_image(root):
    return root.sourced()["KERNEL_IMAGE"]


def test_run_parts_runs_every_hook():
    for kind in ("postinst.d", "postrm.d", "post-update.d"):
        listed = subprocess.run(["run-parts", "--test", str(HOOKS / kind)], capture_output=True, text=True).stdout
        assert listed == f"{HOOKS / kind / 'kexec-auto'}\n"


def test_install_then_remove_cycle(machine, src_env):
    result = run_parts(machine, "postinst.d", OLD, f"configure {OLD}", src_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert f"/etc/default/kexec updated: selected {OLD}" in result.stderr
    assert kernel_image(machine) == f"/boot/vmlinuz-{OLD}"

    machine.add_kernel(NEW)
    result = run_parts(machine, "postinst.d", NEW, f"'configure' '{OLD}'", src_env)
    assert result.returncode == 0 and result.stdout == ""
    assert kernel_image(machine) == f"/boot/vmlinuz-{NEW}"

    # An older kernel installed afterwards does not win.
    machine.add_kernel("6.1.0-55-cloud-amd64")
    run_parts(machine, "postinst.d", "6.1.0-55-cloud-amd64", "configure", src_env)
    assert kernel_image(machine) == f"/boot/vmlinuz-{NEW}"

    # postrm runs for upgrade too: only remove acts.
    machine.remove_kernel(NEW)
    result = run_parts(machine, "postrm.d", NEW, f"upgrade {NEW}", src_env)
    assert result.returncode == 0 and result.stderr == ""
    assert kernel_image(machine) == f"/boot/vmlinuz-{NEW}"
    result = run_parts(machine, "postrm.d", NEW, "remove", src_env)
    assert result.returncode == 0
    assert kernel_image(machine) == f"/boot/vmlinuz-{OLD}"

    # Removing the last kernels leaves LOAD_KEXEC=false, with a warning.
    machine.remove_kernel(OLD)
    machine.remove_kernel("6.1.0-55-cloud-amd64")
    result = run_parts(machine, "postrm.d", OLD, "remove", src_env)
    assert result.returncode == 0
    assert "warning: no selectable kernel" in result.stderr
    assert machine.sourced()["LOAD_KEXEC"] == "false"


def test_initramfs_post_update_makes_a_kernel_selectable(machine, src_env):
    run_parts(machine, "postinst.d", OLD, "configure", src_env)
    machine.add_kernel(NEW, initrd=False)  # initrd generated later (deferred trigger)
    run_parts(machine, "postinst.d", NEW, "configure", src_env)
    assert kernel_image(machine) == f"/boot/vmlinuz-{OLD}"
    machine.write(f"/boot/initrd.img-{NEW}", b"initrd")
    result = run_parts(machine, "post-update.d", NEW, None, src_env)
    assert result.returncode == 0, result.stderr
    assert kernel_image(machine) == f"/boot/vmlinuz-{NEW}"


def test_hook_never_fails_a_kernel_install(machine, src_env):
    run_parts(machine, "postinst.d", OLD, "configure", src_env)
    before = machine.read("/etc/default/kexec")
    machine.config("FLAVOUR=Not A Flavour\n")
    machine.add_kernel(NEW)
    result = run_parts(machine, "postinst.d", NEW, "configure", src_env)
    assert result.returncode == 0
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.endswith("/kexec-auto:")]
    assert len(lines) == 1
    assert lines[0].startswith(f"kexec-auto: error for kernel {NEW}: /etc/default/kexec-auto:1: FLAVOUR: cannot parse")
    assert lines[0].endswith("/etc/default/kexec left unchanged (kernel installation continues)")
    assert machine.read("/etc/default/kexec") == before


def test_write_failure_does_not_fail_the_hook(machine, src_env):
    machine.file("/etc/default/kexec").mkdir()  # nothing can be renamed over a directory
    result = run_parts(machine, "postinst.d", OLD, "configure", src_env)
    assert result.returncode == 0
    assert f"kexec-auto: error for kernel {OLD}: " in result.stderr
    assert "(kernel installation continues)" in result.stderr
    assert machine.file("/etc/default/kexec").is_dir()


def test_hook_left_behind_after_package_removal_exits_quietly(machine, src_env, tmp_path):
    # -S hides an installed kexec-auto as well: the hook must find no module.
    env = dict(src_env, PYTHONPATH=str(tmp_path / "nothing-here"), KEXEC_AUTO_ROOT=str(machine))
    for kind, action in (("postinst.d", "configure"), ("postrm.d", "remove"), ("post-update.d", "")):
        env["DEB_MAINT_PARAMS"] = action
        result = subprocess.run([sys.executable, "-S", str(HOOKS / kind / "kexec-auto"), OLD, f"/boot/vmlinuz-{OLD}"],
                                capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), kind
    assert not machine.exists("/etc/default/kexec")


def test_hook_does_not_read_stdin(machine, src_env):
    # stdin is a pipe left open: a hook reading it would hang until the timeout.
    result = run_parts(machine, "postinst.d", OLD, "configure", src_env, timeout=20)
    assert result.returncode == 0


def test_disabled_hook_says_so_and_changes_nothing(machine, src_env):
    machine.config("ENABLED=false\n")
    result = run_parts(machine, "postinst.d", OLD, "configure", src_env)
    assert result.returncode == 0
    assert "disabled (ENABLED=false" in result.stderr
    assert not machine.exists("/etc/default/kexec")
