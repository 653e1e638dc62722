"""Disk images for kexec-auto's VM tests: the names the VM suite uses.

Everything is built by the one Debian tree and image builder,
tests/harness/debimage.py (cached trees, per-session work directories, disk layouts,
qemu command lines); this module keeps the VM suite's names for it.

A cached tree per suite carries the "provider" kernel: the old kernel that
qemu's fixed -kernel boots (layout "provider"), exactly like a cloud provider
that always boots its own kernel, or that GRUB's default entry is pinned to
(layouts "bios", "uefi", "secureboot").  Each scenario copies that tree into
its session's work directory, does its slow package work in a chroot (kernel
installs run initramfs-tools and update-grub natively, not under TCG), drops
in the guest driver (see guest.py) and turns the tree into a disk image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from harness import debimage
from harness.debimage import (  # noqa: F401  (re-exported)
    APPENDS, ARCHES, CACHE_ENV, DEFAULT_CACHE, HOST_ARCH, KERNEL_SERIES, LAYOUTS, MIRROR, SECURITY_MIRROR, BaseTree,
    BuildError, Chroot, base_tree, cache_dir, configure_grub, configure_guest, copy_tree, firmware_vars,
    install_boot_loader_files, locked, make_disk, make_image, panicking_initrd, pick_kernels,
    qemu_command, run, session_dir, sort_releases, sources_list, split_target, work_dir,
)

BASE_PACKAGES = debimage.VM_PACKAGES
ENV = debimage.HOST_ENV


def local_repo(repo: Path, debs: Sequence[Path]) -> None:
    """A flat apt repository (deb [trusted=yes] file:/... ./) holding debs."""
    debimage.local_repo(debs, repo)
