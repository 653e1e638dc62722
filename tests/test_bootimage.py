from kexec_auto import bootimage
from conftest import BZIMAGE, pe_image


def test_pe_signed_reads_the_certificate_table():
    for signed in (True, False):
        for magic in (0x20B, 0x10B):
            assert bootimage.pe_signed(pe_image(signed, magic)) is signed
    assert bootimage.pe_signed(BZIMAGE) is None
    assert bootimage.pe_signed(b"") is None
