from kexec_auto import bootscan
from conftest import BZIMAGE, pe_image


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
    found = {k.release: k for k in bootscan.find_kernels(str(root))}
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
    assert bootscan.find_kernels(str(tmp_path)) == []


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
    packages = bootscan.kernel_packages(str(root))
    assert packages["6.1.0-56-cloud-amd64"] == ("linux-image-6.1.0-56-cloud-amd64", "6.1.0-56+deb12u1")
    assert packages["6.12.117+deb12-amd64"] == ("linux-image-6.12.117+deb12-amd64-unsigned", "6.12.117-1~deb12u1")
    assert "6.1.0-50-cloud-amd64" not in packages
    assert bootscan.kernel_packages("/nonexistent-root") == {}


def test_unsigned_kernel_cannot_be_booted_under_lockdown_only(root):
    root.add_kernel("6.1.0-9-cloud-amd64", image=pe_image(signed=True))
    root.add_kernel("6.1.0-10-cloud-amd64", image=pe_image(signed=False))
    problems = {k.release: k.problem for k in bootscan.find_kernels(str(root))}
    assert problems == {"6.1.0-9-cloud-amd64": "", "6.1.0-10-cloud-amd64": ""}
    root.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    problems = {k.release: k.problem for k in bootscan.find_kernels(str(root))}
    assert problems["6.1.0-9-cloud-amd64"] == ""
    assert problems["6.1.0-10-cloud-amd64"].startswith("not signed: kernel lockdown (integrity")
    root.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    assert all(not k.problem for k in bootscan.find_kernels(str(root)))
