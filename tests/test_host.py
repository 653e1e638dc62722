from kexec_auto import commands, host


def test_running_release_and_cmdline(root):
    root.running("6.12.117+deb12-cloud-amd64")
    assert host.running_release(str(root)) == "6.12.117+deb12-cloud-amd64"
    assert host.current_cmdline(str(root)) == (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/vda ro console=ttyS0", "/proc/cmdline")
    root.write("/etc/kernel/cmdline", "root=UUID=1234 ro\n")
    assert host.current_cmdline(str(root)) == ("root=UUID=1234 ro", "/etc/kernel/cmdline")


def test_lockdown_mode(root):
    assert host.lockdown_mode(str(root)) is None
    root.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    assert host.lockdown_mode(str(root)) == "none"
    root.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert host.lockdown_mode(str(root)) == "integrity"


def test_kexec_loaded(root):
    assert host.kexec_loaded(str(root)) is False
    root.write("/sys/kernel/kexec_loaded", "1\n")
    assert host.kexec_loaded(str(root)) is True


def test_confinement_of_another_root(root):
    assert host.confinement(str(root)) == "root"


def test_confinement_from_systemd_detect_virt(monkeypatch):
    import subprocess

    answers = {}

    def fake_run(argv):
        code, err = answers[argv[-1]]
        return subprocess.CompletedProcess(argv, code, "", err)

    monkeypatch.setattr(commands, "run", fake_run)
    monkeypatch.setattr(commands, "which", lambda name: f"/usr/bin/{name}")

    def confinement():
        host._host_confinement.cache_clear()  # asked once per process
        return host.confinement("/")

    answers.update({"--container": (0, ""), "--chroot": (1, "")})
    assert confinement() == "container"
    answers.update({"--container": (1, ""), "--chroot": (0, "")})
    assert confinement() == "chroot"
    answers.update({"--container": (1, ""), "--chroot": (1, "")})
    assert confinement() == ""
    answers.update({"--chroot": (1, "Failed to check for chroot() environment: Permission denied\n")})
    assert confinement() == "unknown"
    host._host_confinement.cache_clear()
