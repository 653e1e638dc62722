"""Kernel release strings: flavour splitting and ordering.

Ordering follows ``linux-version sort`` from Debian's linux-base exactly
(``DebianLinux::version_cmp``), so kexec-auto agrees with the tool Debian
itself uses for kernel releases, including its treatment of ``-rc`` and
``-trunk`` as pre-releases (unlike ``dpkg --compare-versions``).

>>> sorted(["6.1.0-10-amd64", "6.1.0-9-amd64"], key=release_key)
['6.1.0-9-amd64', '6.1.0-10-amd64']
>>> split_flavour("6.12.43+deb12-cloud-amd64")
('6.12.43+deb12', 'cloud-amd64')
"""

from __future__ import annotations

import re
from typing import Iterable

# DebianLinux::version_split: numbers, and non-numeric runs broken at hyphens.
_COMPONENT = re.compile(r"\d+|-?[^-\d]*")
_PRE_RELEASE = ("-rc", "-trunk")

# Perl compares numbers beyond 64 bits as doubles.
_PERL_UV_MAX = 2**64 - 1

# Rank of each component class; see release_key().
_PRE, _END, _LOW, _NUM, _HIGH = range(5)


def _component_key(component: str) -> tuple:
    if component in _PRE_RELEASE:
        return (_PRE, component)
    if component.isascii() and component.isdigit():
        number = int(component)
        return (_NUM, number if number <= _PERL_UV_MAX else float(number))
    # Perl compares a number with a string as strings: the string's first
    # character (never a digit) decides on which side of every number it falls.
    if component == "" or component[0] < "0":
        return (_LOW, component)
    return (_HIGH, component)


def release_key(release: str) -> tuple:
    """Sort key ordering releases as ``linux-version sort`` does.

    >>> release_key("6.1.0-rc7") < release_key("6.1.0") < release_key("6.1.0-1")
    True
    >>> release_key("3.2.0-4-amd64") < release_key("3.13-1-amd64")
    True
    """
    key = tuple(_component_key(c) for c in _COMPONENT.findall(release))
    # End of string sorts after pre-release markers and before anything else.
    return key + ((_END,),)


def compare_releases(left: str, right: str) -> int:
    """-1, 0 or 1, as ``linux-version compare`` would have it."""
    a, b = release_key(left), release_key(right)
    return (a > b) - (a < b)


def sort_releases(releases: Iterable[str], reverse: bool = False) -> list[str]:
    """Releases oldest first (newest first with ``reverse``)."""
    return sorted(releases, key=release_key, reverse=reverse)


# <upstream>[-<abi>][-<flavour>]: Debian's ABI is a number (``56``), a
# backport ABI (``0.deb11.17``), or a pre-release (``rc7``, ``trunk``).
# Releases with an ABI inside the upstream part (``6.12.43+deb12``) have no
# separate ABI field.
_ABI = re.compile(r"\d[^-]*|rc[^-]*|trunk[^-]*")


def split_flavour(release: str) -> tuple[str, str]:
    """Split a release into its version and flavour (``""`` when none).

    >>> split_flavour("6.1.0-56-cloud-amd64")
    ('6.1.0-56', 'cloud-amd64')
    >>> split_flavour("6.1.0-0.deb11.17-686-pae")
    ('6.1.0-0.deb11.17', '686-pae')
    >>> split_flavour("6.1.0-rc7-amd64")
    ('6.1.0-rc7', 'amd64')
    >>> split_flavour("6.5.0")
    ('6.5.0', '')
    """
    upstream, _, rest = release.partition("-")
    if not rest:
        return release, ""
    if "+" not in upstream:
        abi, _, flavour = rest.partition("-")
        if _ABI.fullmatch(abi):
            return f"{upstream}-{abi}", flavour
    return upstream, rest


def flavour_of(release: str) -> str:
    return split_flavour(release)[1]


# What a kernel release may be made of to be written into /etc/default/kexec,
# a boot loader entry and kexec-auto's messages as it is: every release
# Debian builds fits ("6.12.117+deb12-cloud-amd64", "6.1.0-0.deb11.17-686-pae").
_SAFE_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.~_-]*")


def unsafe_release(release: str) -> str:
    """Why ``release`` cannot be used as it is ('' when it can).

    >>> unsafe_release("6.1.0-56-cloud-amd64")
    ''
    >>> unsafe_release("6.1.0\\nLOAD_KEXEC=x")
    'characters other than letters, digits and + . ~ _ -'
    """
    if _SAFE_RELEASE.fullmatch(release):
        return ""
    try:
        release.encode("utf-8")
    except UnicodeEncodeError:
        return "not UTF-8"
    return "characters other than letters, digits and + . ~ _ -" if release else "empty"
