"""kexec-auto: reboot Debian into its newest installed kernel through kexec."""

__version__ = "0.1.0"
