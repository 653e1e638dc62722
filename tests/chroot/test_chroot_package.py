"""kexec-auto installed with apt in real bookworm, trixie and forky trees.

One scenario per release, in the order a machine lives through it, with as
few kernel installs as possible (each runs initramfs-tools, ~30 s):

  NEW installed, then kexec-auto      -> NEW selected at once
  install OLD (descending order)      -> still NEW, though /vmlinuz is OLD now
  remove NEW                          -> falls back to OLD
  install NEW (ascending order)       -> NEW
  dpkg-reconfigure, preseeded         -> fixed release + extra arguments,
                                         an invalid release refused, disabled
  apt remove kexec-auto               -> kernel remove/install still work, the
                                         leftover hooks are quiet and inert
  apt purge kexec-auto                -> no file of kexec-auto left,
                                         /etc/default/kexec as it was before

Nothing may be loaded or executed with kexec inside a chroot: /sbin/kexec is
diverted to a recorder, and no loading or executing call may show up.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from harness.debimage import Chroot, file_list

pytestmark = pytest.mark.chroot

#: (older kernel, newer kernel) release patterns, cloud flavour, per suite.
#: forky (testing) carries one kernel release at a time: the older kernel is
#: trixie's, as on every machine upgraded from trixie (the forky trees reach
#: trixie's archive for packages asked for by name, debimage.PREVIOUS_RELEASE).
KERNEL_PATTERNS = {
    "bookworm": (r"6\.1\.0-\d+-cloud-amd64", r"6\.12\.\d+\+deb12-cloud-amd64"),
    "trixie": (r"6\.12\.\d+\+deb13(\.\d+)?-cloud-amd64", r"6\.12\.\d+\+deb13(\.\d+)?-cloud-amd64"),
    "forky": (r"6\.12\.\d+\+deb13(\.\d+)?-cloud-amd64", r"\d+\.\d+\.\d+\+deb14(\.\d+)?-cloud-amd64"),
}

#: Hand-edited /etc/default/kexec content that purge must bring back byte for byte.
HAND_EDIT = "# kept by the administrator: kexec-auto must restore this line on purge\n"

KEXEC_RECORDER = """#!/bin/sh
# kexec-auto chroot test: record every kexec call, never load anything.
echo "$*" >> /var/log/kexec-calls
case " $* " in
    *" --version "*|*" -v "*) exec {real} --version ;;
esac
exit 0
"""

KEXEC_FILES = (
    "/etc/default/kexec-auto",
    "/var/lib/kexec-auto",
    "/usr/share/kexec-auto",
    "/usr/bin/kexec-auto",
    "/etc/kernel/postinst.d/kexec-auto",
    "/etc/kernel/postrm.d/kexec-auto",
    "/etc/initramfs/post-update.d/kexec-auto",
    "/usr/lib/systemd/system-shutdown/kexec-auto",
)


class Steps:
    """Prints how long each step took (visible with pytest -s, and on failure)."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.last = time.monotonic()

    def done(self, what: str) -> None:
        now = time.monotonic()
        print(f"{self.suite}: {what}: {now - self.last:.0f} s")
        self.last = now


def sourced(chroot: Chroot) -> dict[str, str]:
    """KERNEL_IMAGE, INITRD, APPEND as sh sees them after sourcing /etc/default/kexec."""
    out = chroot.run(
        ". /etc/default/kexec && printf '%s\\0' \"$KERNEL_IMAGE\" \"$INITRD\" \"$APPEND\""
    ).stdout
    image, initrd, append, _ = out.split("\0")
    return {"KERNEL_IMAGE": image, "INITRD": initrd, "APPEND": append}


def assert_selects(chroot: Chroot, release: str, when: str) -> dict[str, str]:
    values = sourced(chroot)
    expected = {"KERNEL_IMAGE": f"/boot/vmlinuz-{release}", "INITRD": f"/boot/initrd.img-{release}"}
    got = {k: values[k] for k in expected}
    assert got == expected, (
        f"{when}: /etc/default/kexec should select {release}\n"
        f"--- /etc/default/kexec ---\n{chroot.read('/etc/default/kexec')}"
    )
    for path in expected.values():
        assert chroot.path(path).is_file(), f"{when}: {path} named but missing"
    return values


def pick_kernels(chroot: Chroot, suite: str) -> tuple[str, str]:
    """An older and a newer cloud kernel release that apt can install here."""
    names = chroot.run("apt-cache pkgnames linux-image-").stdout.split()
    releases = [n.removeprefix("linux-image-") for n in names]
    old_re, new_re = KERNEL_PATTERNS[suite]

    def newest_first(pattern: str) -> list[str]:
        matching = [r for r in releases if re.fullmatch(pattern, r)]
        assert matching, f"no linux-image-{pattern} in the {suite} archive:\n{sorted(names)}"
        ordered = chroot.run(["linux-version", "sort", "--reverse", *matching]).stdout.split()
        return ordered

    new = newest_first(new_re)[0]
    upstream = new.split("+")[0]
    older = [r for r in newest_first(old_re) if r.split("+")[0] != upstream]
    assert older, f"{suite}: no cloud kernel older than {new} in the archive"
    old = older[0]
    chroot.run(["linux-version", "compare", old, "lt", new])
    print(chroot.run(["apt-cache", "policy", f"linux-image-{old}", f"linux-image-{new}"]).stdout)
    return old, new


def apt(chroot: Chroot, *args: str) -> str:
    """apt-get ARGS; returns stdout and stderr together."""
    proc = chroot.run(["apt-get", "-q", "-y", "-o", "Dpkg::Use-Pty=0", *args], timeout=900)
    return proc.stdout + proc.stderr


def install_kernel(chroot: Chroot, release: str) -> str:
    return apt(chroot, "install", "--no-install-recommends", f"linux-image-{release}")


def remove_kernel(chroot: Chroot, release: str) -> str:
    return apt(chroot, "remove", f"linux-image-{release}")


def reconfigure(chroot: Chroot, answers: dict[str, str], check: bool = True):
    def kind(question: str) -> str:
        return "boolean" if question == "enable" else "select" if question in ("kernels", "cmdline") else "string"

    selections = "".join(f"kexec-auto kexec-auto/{q} {kind(q)} {v}\n" for q, v in answers.items())
    chroot.run(["debconf-set-selections"], input=selections)
    return chroot.run(["dpkg-reconfigure", "-fnoninteractive", "kexec-auto"], check=check)


def config_values(chroot: Chroot, *keys: str) -> list[str]:
    return chroot.run(["kexec-auto", "get", *keys]).stdout.splitlines()


def package_status(chroot: Chroot, package: str) -> str:
    proc = chroot.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", package], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "not known"


def divert_kexec(chroot: Chroot) -> None:
    """Replace kexec-tools' kexec with a recorder (a diversion, as an admin would)."""
    real = next(p for p in ("/usr/sbin/kexec", "/sbin/kexec")
                if p in chroot.run(["dpkg", "-L", "kexec-tools"]).stdout.split())
    chroot.run(["dpkg-divert", "--local", "--rename", "--divert", real + ".real", "--add", real])
    recorder = chroot.path(real)
    recorder.write_text(KEXEC_RECORDER.format(real=real + ".real"))
    recorder.chmod(0o755)


def kexec_calls(chroot: Chroot) -> list[str]:
    return (chroot.read("/var/log/kexec-calls") or "").splitlines()


def canonical(chroot: Chroot, path: str) -> str:
    """path as os.walk finds it: /lib/x.so is /usr/lib/x.so on a merged-/usr tree."""
    parent, name = os.path.split(path)
    real_parent = os.path.realpath(chroot.path(parent))
    inside = "/" + os.path.relpath(real_parent, chroot.root)
    return os.path.normpath(os.path.join(inside, name))


def owned_paths(chroot: Chroot) -> set[str]:
    """Every path listed by an installed package (dpkg's database), canonical,
    plus the links update-alternatives made for installed packages."""
    owned: set[str] = set()
    for listing in chroot.path("/var/lib/dpkg/info").glob("*.list"):
        owned.update(line for line in listing.read_text().splitlines() if line)
    for alternative in chroot.path("/var/lib/dpkg/alternatives").iterdir():
        lines = alternative.read_text().splitlines()
        owned.add(f"/etc/alternatives/{alternative.name}")
        owned.add(lines[1])  # the link, e.g. /usr/bin/pybabel
        # slave links: name/link pairs until the empty line
        for i in range(2, len(lines) - 1, 2):
            if not lines[i]:
                break
            owned.add(f"/etc/alternatives/{lines[i]}")
            owned.add(lines[i + 1])
    return {canonical(chroot, p) for p in owned}


#: Made by maintainer scripts of packages that kexec-auto's dependencies pull
#: in, owned by no package, and left when kexec-auto is purged because those
#: packages stay installed (as piuparts, the test keeps a list of them).
DEPENDENCY_GENERATED = (
    "/etc/ssl/certs/",  # ca-certificates (update-ca-certificates)
    "/etc/ca-certificates.conf",
    "/usr/local/share/ca-certificates",
    "/usr/local/lib/python3",  # python3.11 / python3.13
    "/var/lib/python",
    "/etc/python3",  # python3: /etc/python3/debian_config
    "/etc/inputrc",  # readline-common
    "/etc/hosts",  # netbase (trixie)
    "/etc/networks",
)


def unexplained_additions(chroot: Chroot, before: set[str], after: set[str]) -> list[str]:
    """Paths added that no installed package (nor its byte-compiling) explains."""
    owned = owned_paths(chroot)
    unexplained = []
    for path in sorted(after - before):
        if path in owned or path.startswith(DEPENDENCY_GENERATED):
            continue
        if "/__pycache__" in path and path.split("/__pycache__")[0] in owned:
            continue  # py3compile of another package's modules
        unexplained.append(path)
    return unexplained


def paths_named_kexec_auto(chroot: Chroot) -> list[str]:
    ignore = ("/proc", "/sys", "/dev", "/run", "/var/log", "/var/lib/apt/lists",
              "/srv/kexec-auto-test-repo", "/etc/apt/sources.list.d/kexec-auto-test.list",
              # the test trees' own apt settings (debimage.cached_tree)
              "/etc/apt/apt.conf.d/90kexec-auto-tests", "/etc/apt/preferences.d/90kexec-auto-tests")
    root = str(chroot.root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        inside = "/" + os.path.relpath(dirpath, root).lstrip(".")
        dirnames[:] = [d for d in dirnames
                       if not any((inside.rstrip("/") + "/" + d).startswith(i) for i in ignore)]
        for name in dirnames + filenames:
            path = inside.rstrip("/") + "/" + name
            if re.search("kexec[-_]auto", name) and not any(path.startswith(i) for i in ignore):
                found.append(path)
    return sorted(found)


def test_kexec_auto_package_lifecycle(package_tree: Chroot, suite: str) -> None:
    chroot = package_tree
    steps = Steps(suite)
    host_kexec_loaded = Path("/sys/kernel/kexec_loaded")
    host_loaded_before = host_kexec_loaded.read_text() if host_kexec_loaded.exists() else None

    old, new = pick_kernels(chroot, suite)
    print(f"{suite}: older kernel {old}, newer kernel {new}")
    divert_kexec(chroot)

    install_kernel(chroot, new)
    steps.done(f"install {new} (before kexec-auto)")

    # The state kexec-auto finds, and must give back on purge.
    default_kexec = chroot.path("/etc/default/kexec")
    default_kexec.write_text(default_kexec.read_text() + HAND_EDIT)
    original_default_kexec = default_kexec.read_text()
    for dep in ("python3-debian", "python3-jinja2"):
        assert package_status(chroot, dep) != "ii ", f"{dep} already in the tree: apt would not resolve it"
    before = file_list(chroot.root)

    # --- apt install: dependencies resolved, the newest kernel selected at once
    out = apt(chroot, "install", "kexec-auto")
    steps.done("apt-get install kexec-auto")
    for dep in ("kexec-auto", "kexec-tools", "python3-debian", "python3-jinja2", "debconf"):
        assert package_status(chroot, dep) == "ii", f"{dep} not installed:\n{out}"
    installed_files = set(chroot.run(["dpkg", "-L", "kexec-auto"]).stdout.split()) - {"/."}
    print(f"{suite}: /etc/default/kexec after install:\n{default_kexec.read_text()}")
    assert_selects(chroot, new, "after apt-get install kexec-auto")
    assert HAND_EDIT.strip() not in default_kexec.read_text(), "the hand-edited file was not taken over"

    # --- descending order: an older kernel installed later (and /vmlinuz follows it)
    install_kernel(chroot, old)
    steps.done(f"install {old}")
    assert os.readlink(chroot.path("/vmlinuz")).endswith(old), "/vmlinuz should now point at the older kernel"
    assert_selects(chroot, new, f"after installing the older {old}")

    # --- removing the newest falls back
    remove_kernel(chroot, new)
    steps.done(f"remove {new}")
    assert_selects(chroot, old, f"after removing {new}")

    # --- ascending order
    install_kernel(chroot, new)
    steps.done(f"install {new} again")
    plain = assert_selects(chroot, new, f"after installing {new} over {old}")
    # a chroot's /proc/cmdline is the build host's: kexec-auto takes none
    # (kexec-tools then reuses the booted kernel's; the first boot fills it in)
    assert plain["APPEND"] == "", f"the host's command line was taken: {plain}"

    # --- kexec-tools' postinst edits /etc/default/kexec with sed on every
    # configure (each upgrade of kexec-tools); the selection must survive it
    chroot.run(["dpkg-reconfigure", "-fnoninteractive", "kexec-tools"])
    assert_selects(chroot, new, "after kexec-tools' postinst ran again")
    chroot.run(["kexec-auto", "update"])
    print(f"{suite}: after dpkg-reconfigure kexec-tools and kexec-auto update:\n"
          f"{default_kexec.read_text()}\n"
          + chroot.run("ls -l /etc/default/kexec*").stdout)
    assert_selects(chroot, new, "after kexec-tools' postinst ran again and kexec-auto update")

    # --- dpkg-reconfigure with preseeded answers, on a system whose own
    # command line is known (kernel-install's /etc/kernel/cmdline)
    own = "root=/dev/vda ro"
    chroot.path("/etc/kernel/cmdline").write_text(own + "\n")
    extra = "quiet kexec_auto_test=1"
    reconfigure(chroot, {"enable": "true", "kernels": "fixed", "release": old, "extra": extra})
    pinned = assert_selects(chroot, old, "after preseeding a fixed release")
    assert pinned["APPEND"] == f"{own} {extra}", f"extra arguments not appended: {pinned}"
    assert config_values(chroot, "PIN", "EXTRA_CMDLINE") == [old, extra]

    kept_config = chroot.read("/etc/default/kexec-auto")
    kept_default = default_kexec.read_text()
    bogus = "9.9.9-1-cloud-amd64"
    proc = reconfigure(chroot, {"kernels": "fixed", "release": bogus}, check=False)
    print(f"{suite}: reconfigure with an uninstalled release: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    assert bogus in proc.stdout + proc.stderr, "an uninstalled release must be refused with a message naming it"
    assert chroot.read("/etc/default/kexec-auto") == kept_config, "a refused answer changed /etc/default/kexec-auto"
    assert default_kexec.read_text() == kept_default, "a refused answer changed /etc/default/kexec"

    reconfigure(chroot, {"enable": "false", "kernels": "running", "release": "", "extra": ""})
    assert config_values(chroot, "ENABLED") == ["false"]
    disabled_default = default_kexec.read_text()
    chroot.run(["kexec-auto", "update"])
    assert default_kexec.read_text() == disabled_default, "update rewrote /etc/default/kexec while disabled"

    reconfigure(chroot, {"enable": "true", "kernels": "running", "release": "", "extra": ""})
    assert assert_selects(chroot, new, "after re-enabling")["APPEND"] == own
    chroot.path("/etc/kernel/cmdline").unlink()
    steps.done("dpkg-reconfigure: kexec-tools once, kexec-auto four times")

    # --- apt remove: the hooks stay as conffiles, and must keep quiet
    apt(chroot, "remove", "kexec-auto")
    assert package_status(chroot, "kexec-auto") == "rc", "kexec-auto should be removed, not purged"
    assert chroot.path("/etc/kernel/postinst.d/kexec-auto").exists(), "conffile hook should be left behind"
    after_remove = default_kexec.read_text()
    print(f"{suite}: /etc/default/kexec after apt-get remove kexec-auto:\n{after_remove}")
    for action, out in (("remove", remove_kernel(chroot, old)), ("install", install_kernel(chroot, old))):
        assert not re.search("kexec[-_]auto|Traceback", out), (
            f"a left-over hook spoke during kernel {action}:\n{out}")
        assert default_kexec.read_text() == after_remove, f"a left-over hook rewrote the file on {action}"
    steps.done(f"remove and install {old} with kexec-auto removed")

    # --- apt purge: nothing left, /etc/default/kexec as it was
    apt(chroot, "purge", "kexec-auto")
    steps.done("apt-get purge kexec-auto")
    assert package_status(chroot, "kexec-auto") in ("not known", "pn"), "kexec-auto not purged"
    assert default_kexec.read_text() == original_default_kexec, "/etc/default/kexec not restored on purge"
    owned = owned_paths(chroot)
    left = [p for p in sorted(installed_files | set(KEXEC_FILES))
            if (chroot.path(p).exists() or chroot.path(p).is_symlink())
            and not (chroot.path(p).is_dir() and canonical(chroot, p) in owned)]
    assert not left, f"files of kexec-auto left after purge: {left}"
    assert not paths_named_kexec_auto(chroot), f"left after purge: {paths_named_kexec_auto(chroot)}"
    after = file_list(chroot.root)
    vanished = sorted(before - after)
    assert not vanished, (
        "install + purge of kexec-auto deleted paths that existed before "
        f"(a directory of another package removed with kexec-auto's?): {vanished}")
    added = unexplained_additions(chroot, before, after)
    assert not added, f"install + purge left paths that no installed package explains: {added}"
    for db in ("config.dat", "templates.dat"):
        text = chroot.read(f"/var/cache/debconf/{db}") or ""
        assert "Name: kexec-auto/" not in text, f"debconf {db} still holds kexec-auto's questions"

    # --- nothing was ever loaded or executed from inside the chroot
    loading = [c for c in kexec_calls(chroot) if re.search(r"(^|\s)(-l|-s|-e|-p|--load\S*|--exec)(\s|$)", c)]
    assert not loading, f"kexec was asked to load or execute inside a chroot: {loading}"
    if host_loaded_before is not None:
        assert host_kexec_loaded.read_text() == host_loaded_before, "the host's kexec_loaded changed"
    print(f"{suite}: kexec calls recorded: {kexec_calls(chroot)}")
