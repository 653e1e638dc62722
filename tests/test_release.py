"""Release ordering, checked against Debian's own linux-version as oracle."""

import random
import shutil
import subprocess

import pytest

from kexec_auto.release import (
    compare_releases,
    flavour_of,
    release_key,
    sort_releases,
    split_flavour,
)

LINUX_VERSION = shutil.which("linux-version") or "/usr/bin/linux-version"

FLAVOURS = ["amd64", "cloud-amd64", "rt-amd64", "686-pae", "arm64", "armmp-lpae", ""]


def _corpus() -> list[str]:
    """Hundreds of release strings: every Debian form plus odd ones."""
    versions = [
        "3.2.0-4", "3.13-1", "3.16.0-4", "4.9.0-19", "4.19.0-27", "4.19.0-trunk",
        "5.10.0-0.deb10.16", "5.10.0-33", "6.1.0-rc7", "6.1.0-rc1", "6.1.0",
        "6.1.0-1", "6.1.0-9", "6.1.0-10", "6.1.0-47", "6.1.0-56", "6.1.0-0.deb11.17",
        "6.1.0-0.deb11.9", "6.12.100+deb12", "6.12.111+deb12", "6.12.117+deb12",
        "6.12.9+bpo", "6.12.43+deb13", "6.12.43+deb12", "6.12.43", "6.12-rc7",
        "6.12-trunk", "6.16-rc7+unreleased", "6.17+unreleased", "2.6.32-5",
        "2.6.32.1", "2.6.32-1", "6.1.0-56+b1", "6.1.0~rc1", "6.1.0-00056",
        "10.0.0-1", "6.01.0-1", "6.1.0-18446744073709551616",
    ]
    corpus = {f"{v}-{f}" if f else v for v in versions for f in FLAVOURS}
    corpus.update(
        [
            "", "-", "--", "a", "A", "z-9", ".", "6..1", "6.1.0--56-amd64",
            "6.1.0-rc-amd64", "6.1.0-trunk", "6.1.0-rcx-amd64", "6.1.0-RC1-amd64",
            "6.1.0-56-amd64.bak", "6.1.0-56-ämd64", "6.1.0-56-amd64~", "6.1.0_56",
        ]
    )
    rng = random.Random(20261125)
    pieces = ["0", "1", "9", "10", "56", "117", ".", "-", "+", "~", "rc", "-rc",
              "trunk", "-trunk", "deb12", "bpo", "amd64", "-cloud", "x", "_"]
    while len(corpus) < 700:
        corpus.add("".join(rng.choice(pieces) for _ in range(rng.randint(1, 7))))
    return sorted(corpus)


CORPUS = _corpus()


def _oracle_sort(releases: list[str]) -> list[str]:
    out = subprocess.run(
        [LINUX_VERSION, "sort", *releases], check=True, capture_output=True, text=True
    ).stdout
    return out.split("\n")[:-1]


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 500
    for form in ("-rc", "-trunk", "+bpo", "0.deb11.", "+deb12", "cloud-amd64"):
        assert any(form in r for r in CORPUS), form


@pytest.mark.parametrize("seed", range(3))
def test_sort_agrees_with_linux_version(seed):
    releases = list(CORPUS)
    random.Random(seed).shuffle(releases)
    assert sort_releases(releases) == _oracle_sort(releases)


def test_compare_agrees_with_debianlinux_version_cmp_on_random_pairs():
    """linux-version's own version_cmp (DebianLinux.pm) judges 3000 pairs."""
    rng = random.Random(7)
    pairs = [(rng.choice(CORPUS), rng.choice(CORPUS)) for _ in range(3000)]
    script = (
        "use DebianLinux qw(version_cmp); $/ = \"\\0\";"
        "while (defined(my $l = <STDIN>)) { my $r = <STDIN>; chop $l; chop $r;"
        " print version_cmp($l, $r), \"\\n\"; }"
    )
    stdin = "".join(f"{left}\0{right}\0" for left, right in pairs)
    out = subprocess.run(["perl", "-e", script], input=stdin.encode(),
                         capture_output=True, check=True).stdout.decode().split()
    assert [compare_releases(left, right) for left, right in pairs] == [int(x) for x in out]


@pytest.mark.parametrize(
    "older, newer",
    [
        ("6.1.0-9-amd64", "6.1.0-10-amd64"),
        ("3.2.0-4-amd64", "3.13-1-amd64"),
        ("6.1.0-56-cloud-amd64", "6.12.111+deb12-cloud-amd64"),
        ("6.1.0-rc7-amd64", "6.1.0-1-amd64"),
        ("4.19.0-trunk-amd64", "4.19.0-1-amd64"),
        ("6.1.0-0.deb11.9-amd64", "6.1.0-0.deb11.17-amd64"),
        ("6.12.100+deb12-amd64", "6.12.117+deb12-amd64"),
    ],
)
def test_known_orderings(older, newer):
    assert release_key(older) < release_key(newer)
    assert sort_releases([newer, older]) == [older, newer]


@pytest.mark.parametrize(
    "release, version, flavour",
    [
        ("6.1.0-56-cloud-amd64", "6.1.0-56", "cloud-amd64"),
        ("6.1.0-56-rt-amd64", "6.1.0-56", "rt-amd64"),
        ("6.1.0-56-amd64", "6.1.0-56", "amd64"),
        ("6.12.117+deb12-cloud-amd64", "6.12.117+deb12", "cloud-amd64"),
        ("6.1.0-0.deb11.17-686-pae", "6.1.0-0.deb11.17", "686-pae"),
        ("4.19.0-trunk-amd64", "4.19.0-trunk", "amd64"),
        ("6.1.0-rc7-amd64", "6.1.0-rc7", "amd64"),
        ("3.13-1-amd64", "3.13-1", "amd64"),
        ("6.16-rc7+unreleased-arm64", "6.16-rc7+unreleased", "arm64"),
        ("6.5.0", "6.5.0", ""),
        ("6.5.0-custom", "6.5.0", "custom"),
    ],
)
def test_split_flavour(release, version, flavour):
    assert split_flavour(release) == (version, flavour)
    assert flavour_of(release) == flavour
