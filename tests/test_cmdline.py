from kexec_auto.cmdline import build_cmdline, clean_cmdline, split_words


def test_boot_loader_words_are_dropped():
    assert clean_cmdline(
        "BOOT_IMAGE=/boot/vmlinuz-6.1.0-56-amd64 root=UUID=abc ro initrd=\\initrd.img quiet "
        "elfcorehdr=0x1000 kexec_jump_back_entry=0x2 crashkernel=256M"
    ) == "root=UUID=abc ro quiet crashkernel=256M"


def test_quoted_words_stay_whole():
    assert split_words('a "b c" d="e f"  g') == ["a", '"b c"', 'd="e f"', "g"]
    assert clean_cmdline('BOOT_IMAGE=x acpi_osi="Windows 2020" ro') == 'acpi_osi="Windows 2020" ro'


def test_configured_cmdline_wins_and_extra_is_appended():
    assert build_cmdline("root=/dev/sda1 ro", "BOOT_IMAGE=x root=/dev/vda", "") == "root=/dev/sda1 ro"
    assert build_cmdline("", "BOOT_IMAGE=x root=/dev/vda\n", " nokaslr ") == "root=/dev/vda nokaslr"
    assert build_cmdline("", "", "") == ""


def test_extra_words_go_to_the_kernel_not_to_init():
    # after "--" every word is init's: EXTRA_CMDLINE must land before it
    current = "root=/dev/vda ro -- --init-flag value"
    built = build_cmdline("", current, "panic=10 quiet")
    words = split_words(built)
    assert words[:words.index("--")] == ["root=/dev/vda", "ro", "panic=10", "quiet"]
    assert words[words.index("--"):] == ["--", "--init-flag", "value"]
    assert build_cmdline("root=/dev/sda1 -- single", "", "nokaslr") == "root=/dev/sda1 nokaslr -- single"
    # nothing to add: the command line stays as it was
    assert build_cmdline("", current, " ") == current
