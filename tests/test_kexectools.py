from kexec_auto import kexectools


def test_source_default_kexec_reads_kexec_d_like_kexec_tools(root):
    assert kexectools.source_default_kexec(str(root)) is None
    root.write("/etc/default/kexec", "LOAD_KEXEC=true\nKERNEL_IMAGE=/vmlinuz\nAPPEND='a b'\n")
    root.write("/etc/default/kexec.d/10-local", "APPEND=\"$APPEND c\"\n")
    root.write("/etc/default/kexec.d/skip.me", "APPEND=ignored\n")  # run-parts skips dotted names
    assert kexectools.source_default_kexec(str(root)) == {
        "LOAD_KEXEC": "true", "KERNEL_IMAGE": "/vmlinuz", "INITRD": "", "APPEND": "a b c", "USE_GRUB_CONFIG": ""}
