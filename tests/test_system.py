import pytest

from kexec_auto import system
from conftest import BZIMAGE


def test_find_kernels_pairs_images_with_initrds_and_explains_skips(root):
    root.add_kernel("6.1.0-56-cloud-amd64")
    root.add_kernel("6.1.0-55-cloud-amd64", initrd=False)
    root.write("/boot/initrd.img-6.1.0-54-cloud-amd64", b"x")  # initrd without a kernel
    root.write("/boot/vmlinuz-6.1.0-57-cloud-amd64", b"")
    root.write("/boot/vmlinuz-6.1.0-58-cloud-amd64", b"MZ not a bzImage" * 64)
    root.write("/boot/vmlinuz-6.1.0-56-cloud-amd64.dpkg-tmp", BZIMAGE)
    root.write("/boot/vmlinuz-6.1.0-56-cloud-amd64.sig", b"sig")
    root.write("/boot/vmlinuz-6.1.0-56-cloud-amd64.bak", BZIMAGE)
    root.write("/boot/config-6.1.0-56-cloud-amd64", "CONFIG_KEXEC=y")
    root.file("/boot/vmlinuz-dir").mkdir()
    found = {k.release: k for k in system.find_kernels(str(root))}
    assert sorted(found) == [
        "6.1.0-55-cloud-amd64",
        "6.1.0-56-cloud-amd64",
        "6.1.0-56-cloud-amd64.bak",
        "6.1.0-56-cloud-amd64.dpkg-tmp",
        "6.1.0-56-cloud-amd64.sig",
        "6.1.0-57-cloud-amd64",
        "6.1.0-58-cloud-amd64",
    ]
    good = found["6.1.0-56-cloud-amd64"]
    assert (good.image, good.initrd, good.problem) == (
        "/boot/vmlinuz-6.1.0-56-cloud-amd64", "/boot/initrd.img-6.1.0-56-cloud-amd64", "")
    assert found["6.1.0-55-cloud-amd64"].initrd is None
    assert found["6.1.0-57-cloud-amd64"].problem == "empty file"
    assert found["6.1.0-58-cloud-amd64"].problem == "not a Linux x86 boot image (no HdrS magic at 0x202)"
    assert found["6.1.0-56-cloud-amd64.dpkg-tmp"].problem == "stray file (left over by dpkg)"
    assert found["6.1.0-56-cloud-amd64.sig"].problem == "stray file (a detached signature)"
    assert found["6.1.0-56-cloud-amd64.bak"].problem == "stray file (a backup copy)"


def test_missing_boot_means_no_kernels(tmp_path):
    assert system.find_kernels(str(tmp_path)) == []


def test_running_release_and_cmdline(root):
    root.running("6.12.117+deb12-cloud-amd64")
    assert system.running_release(str(root)) == "6.12.117+deb12-cloud-amd64"
    assert system.current_cmdline(str(root)) == (
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/vda ro console=ttyS0", "/proc/cmdline")
    root.write("/etc/kernel/cmdline", "root=UUID=1234 ro\n")
    assert system.current_cmdline(str(root)) == ("root=UUID=1234 ro", "/etc/kernel/cmdline")


def test_lockdown_mode(root):
    assert system.lockdown_mode(str(root)) is None
    root.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    assert system.lockdown_mode(str(root)) == "none"
    root.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert system.lockdown_mode(str(root)) == "integrity"


def test_kexec_loaded(root):
    assert system.kexec_loaded(str(root)) is False
    root.write("/sys/kernel/kexec_loaded", "1\n")
    assert system.kexec_loaded(str(root)) is True


def test_source_default_kexec_reads_kexec_d_like_kexec_tools(root):
    assert system.source_default_kexec(str(root)) is None
    root.write("/etc/default/kexec", "LOAD_KEXEC=true\nKERNEL_IMAGE=/vmlinuz\nAPPEND='a b'\n")
    root.write("/etc/default/kexec.d/10-local", "APPEND=\"$APPEND c\"\n")
    root.write("/etc/default/kexec.d/skip.me", "APPEND=ignored\n")  # run-parts skips dotted names
    assert system.source_default_kexec(str(root)) == {
        "LOAD_KEXEC": "true", "KERNEL_IMAGE": "/vmlinuz", "INITRD": "", "APPEND": "a b c", "USE_GRUB_CONFIG": ""}


def test_confinement_of_another_root(root):
    assert system.confinement(str(root)) == "root"


def test_kernel_packages_from_dpkg_status(root):
    root.write("/var/lib/dpkg/status", """\
Package: linux-image-6.1.0-56-cloud-amd64
Status: install ok installed
Version: 6.1.0-56+deb12u1

Package: linux-image-6.1.0-50-cloud-amd64
Status: deinstall ok config-files
Version: 6.1.0-50

Package: linux-image-6.12.117+deb12-amd64-unsigned
Status: install ok installed
Version: 6.12.117-1~deb12u1

Package: linux-image-cloud-amd64
Status: install ok installed
Version: 6.1.0-56+deb12u1

Package: bash
Status: install ok installed
Version: 5.2.15-2+b8
""")
    packages = system.kernel_packages(str(root))
    assert packages["6.1.0-56-cloud-amd64"] == ("linux-image-6.1.0-56-cloud-amd64", "6.1.0-56+deb12u1")
    assert packages["6.12.117+deb12-amd64"] == ("linux-image-6.12.117+deb12-amd64-unsigned", "6.12.117-1~deb12u1")
    assert "6.1.0-50-cloud-amd64" not in packages
    assert system.kernel_packages("/nonexistent-root") == {}


def test_confinement_from_systemd_detect_virt(monkeypatch):
    import subprocess

    answers = {}

    def fake_run(argv):
        code, err = answers[argv[-1]]
        return subprocess.CompletedProcess(argv, code, "", err)

    monkeypatch.setattr(system, "run", fake_run)
    monkeypatch.setattr(system.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")

    def confinement():
        system._host_confinement.cache_clear()  # asked once per process
        return system.confinement("/")

    answers.update({"--container": (0, ""), "--chroot": (1, "")})
    assert confinement() == "container"
    answers.update({"--container": (1, ""), "--chroot": (0, "")})
    assert confinement() == "chroot"
    answers.update({"--container": (1, ""), "--chroot": (1, "")})
    assert confinement() == ""
    answers.update({"--chroot": (1, "Failed to check for chroot() environment: Permission denied\n")})
    assert confinement() == "unknown"
    system._host_confinement.cache_clear()


def pe_image(signed: bool, magic: int = 0x20B) -> bytes:
    """A bzImage with an EFI stub's PE header, as Debian's kernels have."""
    image = bytearray(BZIMAGE + b"\0" * 1024)
    image[0:2] = b"MZ"
    pe = 0x80
    image[0x3C:0x40] = pe.to_bytes(4, "little")
    image[pe:pe + 4] = b"PE\0\0"
    optional = pe + 24
    image[optional:optional + 2] = magic.to_bytes(2, "little")
    security = optional + (112 if magic == 0x20B else 96) + 4 * 8
    if signed:
        image[security:security + 8] = (0x400).to_bytes(4, "little") + (0x700).to_bytes(4, "little")
    return bytes(image)


def test_pe_signed_reads_the_certificate_table(root):
    for signed in (True, False):
        for magic in (0x20B, 0x10B):
            path = root.write(f"/boot/img-{signed}-{magic}", pe_image(signed, magic))
            assert system.pe_signed(path) is signed
    assert system.pe_signed(root.write("/boot/plain", BZIMAGE)) is None
    assert system.pe_signed(root.file("/boot/missing")) is None


def test_unsigned_kernel_cannot_be_booted_under_lockdown_only(root):
    root.add_kernel("6.1.0-9-cloud-amd64", image=pe_image(signed=True))
    root.add_kernel("6.1.0-10-cloud-amd64", image=pe_image(signed=False))
    problems = {k.release: k.problem for k in system.find_kernels(str(root))}
    assert problems == {"6.1.0-9-cloud-amd64": "", "6.1.0-10-cloud-amd64": ""}
    root.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    problems = {k.release: k.problem for k in system.find_kernels(str(root))}
    assert problems["6.1.0-9-cloud-amd64"] == ""
    assert problems["6.1.0-10-cloud-amd64"].startswith("not signed: kernel lockdown (integrity")
    root.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    assert all(not k.problem for k in system.find_kernels(str(root)))


def test_queued_jobs_reads_systemctl_and_tells_a_failure_from_no_jobs(monkeypatch):
    import subprocess
    answers = {}
    monkeypatch.setattr(system.shutil, "which", lambda name, path=None: "/usr/bin/systemctl")
    monkeypatch.setattr(system, "run", lambda argv: subprocess.CompletedProcess(argv, *answers["reply"]))
    answers["reply"] = (0, "  118 reboot.target start waiting\n  120 kexec-auto-load.service stop running\n", "")
    assert system.queued_jobs() == ["reboot.target", "kexec-auto-load.service"]
    answers["reply"] = (0, "", "")
    assert system.queued_jobs() == []
    answers["reply"] = (1, "", "Failed to connect to system scope bus via local transport: No such file or directory\n")
    with pytest.raises(system.JobsUnknown, match="^Failed to connect to system scope bus"):
        system.queued_jobs()
