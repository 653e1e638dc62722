"""Integration tests of the kexec-auto package in debootstrap'd Debian trees."""
