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
        "dir",
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
    assert found["dir"].problem == "not a regular file (a directory)"


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


def test_every_file_that_looks_like_a_kernel_is_listed_with_why_not(root):
    import os

    root.add_kernel("6.1.0-56-cloud-amd64")
    os.symlink("vmlinuz-6.1.0-99-cloud-amd64", root.file("/boot/vmlinuz-6.1.0-60-cloud-amd64"))
    os.mkfifo(root.file("/boot/vmlinuz-6.1.0-61-cloud-amd64"))
    os.symlink("vmlinuz-6.1.0-56-cloud-amd64", root.file("/boot/vmlinuz-6.1.0-62-cloud-amd64"))
    found = {k.release: k.problem for k in bootscan.find_kernels(str(root))}
    assert found == {
        "6.1.0-56-cloud-amd64": "",
        "6.1.0-60-cloud-amd64": "a dangling symbolic link",
        "6.1.0-61-cloud-amd64": "not a regular file (a FIFO)",
        "6.1.0-62-cloud-amd64": "",  # a link to a kernel is that kernel
    }


def test_a_kernel_image_cut_short_is_never_selectable(root):
    image = pe_image(signed=True, length=8192)
    for keep in (len(image), len(image) - 1, 4096, 1000, 1):
        root.add_kernel("6.1.0-56-cloud-amd64", image=image[:keep])
        (kernel,) = bootscan.find_kernels(str(root))
        if keep == len(image):
            assert kernel.problem == ""
        else:
            assert kernel.problem.startswith("cut short: ") or kernel.problem.startswith("not a Linux"), keep


def test_an_initrd_cut_short_makes_its_kernel_unselectable(root):
    from test_initrd import initramfs

    whole = initramfs()
    for keep, ok in ((len(whole), True), (len(whole) - 1, False), (len(whole) - 5000, False), (200, False)):
        root.add_kernel("6.1.0-56-cloud-amd64", initrd=False)
        root.write("/boot/initrd.img-6.1.0-56-cloud-amd64", whole[:keep])
        (kernel,) = bootscan.find_kernels(str(root))
        assert (kernel.problem == "") == ok, (keep, kernel.problem)
        if not ok:
            assert kernel.problem.startswith("initrd initrd.img-6.1.0-56-cloud-amd64 is cut short"), kernel.problem
