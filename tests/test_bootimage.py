from kexec_auto import bootimage
from conftest import BZIMAGE, pe_image


def test_pe_signed_reads_the_certificate_table():
    for signed in (True, False):
        for magic in (0x20B, 0x10B):
            assert bootimage.pe_signed(pe_image(signed, magic)) is signed
    assert bootimage.pe_signed(BZIMAGE) is None
    assert bootimage.pe_signed(b"") is None


def test_every_prefix_of_a_kernel_image_is_told_from_the_whole():
    for machine, image in (("x86_64", pe_image(signed=True, length=6144)), ("x86_64", BZIMAGE),
                           ("aarch64", arm64_image(8192))):
        assert bootimage.image_problem(image[:bootimage.HEADER_SIZE], len(image), machine) == ""
        for end in range(len(image)):
            assert bootimage.image_problem(image[:min(end, bootimage.HEADER_SIZE)], end, machine), (machine, end)


def arm64_image(length: int) -> bytes:
    """An arm64 EFI-stub Image as Debian's: MZ, ARM\\x64 at 0x38, PE header at
    0x40, one section, a signature of 256 bytes at the end."""
    image = bytearray(pe_image(signed=True, length=length))
    image[0x202:0x206] = bytes(4)  # no x86 header
    image[0x38:0x3C] = b"ARM\x64"
    return bytes(image)


def test_arm64_images_and_their_banner():
    image = arm64_image(8192)
    assert bootimage.image_format(image) == "arm64"
    assert bootimage.image_problem(image[:4096], len(image), "aarch64") == ""
    assert bootimage.image_problem(BZIMAGE, len(BZIMAGE), "aarch64") == \
        "not a Linux arm64 boot image (no ARM\\x64 magic at 0x38)"
    assert bootimage.header_release(image) is None
    banner = b"\0Linux version 6.12.118+deb13-cloud-arm64 (debian-kernel@lists.debian.org) (gcc) #1 SMP\n"
    assert bootimage.banner_release(image + banner) == "6.12.118+deb13-cloud-arm64"
    assert bootimage.banner_release(image) is None
