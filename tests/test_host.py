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


def test_hardware_watchdogs_and_their_drivers_modules(root):
    def device(name, identity):
        root.write(f"/sys/class/watchdog/{name}/identity", identity + "\n")

    def core_user(module):
        root.file(f"/sys/module/{module}").mkdir(parents=True, exist_ok=True)
        root.file("/sys/module/watchdog/holders").mkdir(parents=True, exist_ok=True)
        root.file(f"/sys/module/watchdog/holders/{module}").symlink_to(f"../../{module}")

    assert host.hardware_watchdogs(str(root)) == []
    # iTCO_wdt: the device's parent links to the driver, and on to the module
    device("watchdog0", "iTCO_wdt")
    core_user("iTCO_wdt")
    root.file("/sys/bus/pci/drivers/iTCO_wdt").mkdir(parents=True)
    root.file("/sys/bus/pci/drivers/iTCO_wdt/module").symlink_to("../../../../module/iTCO_wdt")
    root.file("/sys/devices/pci0000:00/0000:00:1f.0").mkdir(parents=True)
    root.file("/sys/devices/pci0000:00/0000:00:1f.0/driver").symlink_to("../../../bus/pci/drivers/iTCO_wdt")
    root.file("/sys/class/watchdog/watchdog0/device").symlink_to("../../../devices/pci0000:00/0000:00:1f.0")
    assert host.hardware_watchdogs(str(root)) == [("iTCO_wdt", "iTCO_wdt")]
    # i6300esb: no parent; the one core user no device links.  softdog is
    # neither a hardware watchdog nor a candidate, nor is a pretimeout governor.
    device("watchdog1", "i6300ESB timer")
    device("watchdog2", "Software Watchdog")
    for module in ("i6300esb", "softdog", "pretimeout_noop"):
        core_user(module)
    assert host.hardware_watchdogs(str(root)) == [("iTCO_wdt", "iTCO_wdt"), ("i6300ESB timer", "i6300esb")]
    # two devices without a parent: which module is whose is not known
    device("watchdog3", "wdat_wdt")
    core_user("wdat_wdt")
    assert host.hardware_watchdogs(str(root)) == [("iTCO_wdt", "iTCO_wdt"), ("i6300ESB timer", ""), ("wdat_wdt", "")]
