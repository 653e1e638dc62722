"""The Debian package: both builds, their contents, lintian, and the
maintainer and shutdown scripts run for real.

The builds (marker ``package``) copy the working tree to a temporary
directory, build it with ``dpkg-buildpackage`` and with stdeb once per test
session, and compare the results.

The script tests run debian/config, debian/postinst, debian/postrm and the
system-shutdown hook on this machine, inside a private mount namespace
(``unshare --mount``) where /etc/default, /var/lib, /boot, /run and
/sys/kernel are empty tmpfs and /usr/bin, /usr/sbin are overlays holding
stand-ins (``kexec-auto`` runs this checkout, ``kexec`` records its
arguments). Nothing outside the namespace changes. They need root.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import mount_namespace_problem
from harness.debbuild import DEBIAN_ENV as CLEAN_ENV
from harness.debbuild import build, copy_tree, session_build

REPO = Path(__file__).resolve().parents[1]
DEBIAN = REPO / "debian"
HOOKS = (
    "/etc/kernel/postinst.d/kexec-auto",
    "/etc/kernel/postrm.d/kexec-auto",
    "/etc/initramfs/post-update.d/kexec-auto",
)
NEEDRESTART_CONF = "/etc/needrestart/conf.d/kexec-auto.conf"
# Only the name of the changelog differs: dpkg-buildpackage builds the native
# package (changelog.gz), stdeb always makes a "3.0 (quilt)" one with a
# Debian revision (changelog.Debian.gz).
CHANGELOGS = {"/usr/share/doc/kexec-auto/changelog.gz", "/usr/share/doc/kexec-auto/changelog.Debian.gz"}

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(not is_root, reason="needs root for a private mount namespace")


def run(argv, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(argv, **kwargs)


def build_log_tail(result: subprocess.CompletedProcess) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-40:])


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> dict[str, Path]:
    """Build kexec-auto both ways, once per session: {"dh": .deb, "stdeb": .deb, "changes": ...}."""
    if shutil.which("dpkg-buildpackage") is None or not Path("/usr/lib/python3/dist-packages/stdeb").exists():
        pytest.skip("dpkg-dev and python3-stdeb are needed to build the package")
    base = tmp_path_factory.mktemp("build")

    dh = session_build()

    stdeb_src = copy_tree(base / "stdeb" / "src")
    result = run(
        ["/usr/bin/python3", "setup.py", "--command-packages=stdeb.command", "bdist_deb"],
        cwd=stdeb_src, env=CLEAN_ENV,
    )
    assert result.returncode == 0, build_log_tail(result)
    (stdeb_deb,) = (stdeb_src / "deb_dist").glob("kexec-auto_*_all.deb")
    return {"dh": dh["deb"], "stdeb": stdeb_deb, "changes": dh["changes"]}


def contents(deb: Path) -> dict[str, str]:
    """{path: mode string} of a .deb's data, paths without the leading "."."""
    listing = run(["dpkg-deb", "-c", str(deb)], check=True).stdout
    entries = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        path = fields[5].split(" -> ")[0]
        entries[path[1:].rstrip("/") or "/"] = fields[0]
    return entries


def control_files(deb: Path, dest: Path) -> dict[str, bytes]:
    run(["dpkg-deb", "-e", str(deb), str(dest)], check=True)
    return {p.name: p.read_bytes() for p in dest.iterdir()}


@pytest.mark.package
def test_dh_package_installs_every_file_where_it_belongs(debs):
    files = contents(debs["dh"])
    expected = {
        **{hook: "-rwxr-xr-x" for hook in HOOKS},
        NEEDRESTART_CONF: "-rw-r--r--",
        # Where bookworm's systemd has the directory: shipped under /usr/lib,
        # purging kexec-auto would remove systemd's (aliased) directory.
        "/lib/systemd/system-shutdown/kexec-auto": "-rwxr-xr-x",
        "/usr/bin/kexec-auto": "-rwxr-xr-x",
        "/lib/systemd/system/kexec-auto-load.service": "-rw-r--r--",
        "/lib/systemd/system/kexec-auto-bless.service": "-rw-r--r--",
        "/lib/systemd/system/kexec-auto-boot.service": "-rw-r--r--",
        "/usr/share/kexec-auto/templates/default-kexec.j2": "-rw-r--r--",
        "/usr/share/man/man8/kexec-auto.8.gz": "-rw-r--r--",
        "/usr/lib/python3/dist-packages/kexec_auto/cli.py": "-rw-r--r--",
        "/usr/share/doc/kexec-auto/copyright": "-rw-r--r--",
        # the trial's watchdogs, from the initramfs on
        "/usr/lib/kexec-auto/trial-watchdog": "-rwxr-xr-x",
        "/usr/share/initramfs-tools/hooks/kexec-auto": "-rwxr-xr-x",
        "/usr/share/initramfs-tools/scripts/init-top/kexec-auto": "-rwxr-xr-x",
        "/lib/systemd/system/kexec-auto-trial-watchdog.service": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert files.get(path) == mode, f"{path}: {files.get(path)!r}, expected {mode}"
    # data_files must not land inside the Python package directory.
    assert not [p for p in files if p.startswith("/usr/lib/python3") and p.endswith(".j2")]
    assert not [p for p in files if "/usr/local/" in p or "/.pybuild" in p]


@pytest.mark.package
@pytest.mark.parametrize("build", ["dh", "stdeb"])
def test_installing_rebuilds_the_initramfs_with_the_hook(debs, tmp_path, build):
    """dh_installinitramfs's trigger: update-initramfs runs once kexec-auto
    is configured, so the newest kernel's initramfs gets the hook at once."""
    control = control_files(debs[build], tmp_path / "DEBIAN")
    assert control["triggers"].decode().split("\n").count("activate-noawait update-initramfs") == 1


@pytest.mark.package
def test_hooks_under_etc_are_conffiles_and_nothing_else(debs, tmp_path):
    control = control_files(debs["dh"], tmp_path / "DEBIAN")
    assert sorted(control["conffiles"].decode().split()) == sorted(HOOKS + (NEEDRESTART_CONF,))


@pytest.mark.package
def test_unit_is_enabled_and_started_by_the_maintainer_scripts(debs, tmp_path):
    postinst = control_files(debs["dh"], tmp_path / "DEBIAN")["postinst"].decode()
    assert "deb-systemd-helper enable 'kexec-auto-load.service'" in postinst
    assert "deb-systemd-helper enable 'kexec-auto-bless.service'" in postinst
    assert "deb-systemd-helper enable 'kexec-auto-boot.service'" in postinst
    assert re.search(r"deb-systemd-invoke \$_dh_action [^\n]*'kexec-auto-load.service'", postinst)
    assert re.search(r"deb-systemd-invoke \$_dh_action [^\n]*'kexec-auto-bless.service'", postinst)
    # The answers are written and /etc/default/kexec updated before the unit
    # is started (its ExecStart publishes the selected kernel).
    assert postinst.index("ka update") < postinst.index("deb-systemd-invoke")


@pytest.mark.package
def test_stdeb_package_has_the_same_files(debs):
    dh, stdeb = contents(debs["dh"]), contents(debs["stdeb"])
    only_dh = {p: m for p, m in dh.items() if stdeb.get(p) != m and p not in CHANGELOGS}
    only_stdeb = {p: m for p, m in stdeb.items() if dh.get(p) != m and p not in CHANGELOGS}
    assert (only_dh, only_stdeb) == ({}, {})
    assert len(CHANGELOGS & set(dh)) == 1 and len(CHANGELOGS & set(stdeb)) == 1


@pytest.mark.package
def test_stdeb_package_has_the_same_maintainer_scripts(debs, tmp_path):
    dh = control_files(debs["dh"], tmp_path / "dh")
    stdeb = control_files(debs["stdeb"], tmp_path / "stdeb")
    scripts = {"config", "postinst", "prerm", "postrm", "templates", "conffiles"}
    assert scripts <= set(dh)
    assert set(dh) - {"control", "md5sums"} == set(stdeb) - {"control", "md5sums"}
    for name in scripts:
        assert dh[name] == stdeb[name], f"DEBIAN/{name} differs"
    for deb in ("dh", "stdeb"):
        depends = run(["dpkg-deb", "-f", str(debs[deb]), "Depends"], check=True).stdout
        for package in ("kexec-tools", "python3-debian", "python3-jinja2", "debconf"):
            assert re.search(rf"(^|[ ,]){package}([ ,(]|$)", depends), (deb, depends)


@pytest.mark.package
def test_lintian_pedantic_has_no_errors_or_warnings(debs):
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed")
    result = run(
        ["lintian", "--pedantic", "--info", str(debs["dh"]), str(debs["changes"])],
        env=CLEAN_ENV,
    )
    bad = [line for line in result.stdout.splitlines() if line.startswith(("E:", "W:"))]
    assert bad == [], result.stdout + result.stderr
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_time_tests_run_with_the_pythons_pybuild_uses(tmp_path):
    """debian/rules' test step, with a python3 that is not Debian's first
    on PATH (pyenv, a virtualenv): each of py3versions -s runs the tests,
    from /usr/bin, and the one on PATH never does."""
    if shutil.which("py3versions") is None or shutil.which("make") is None:
        pytest.skip("needs python3 (py3versions) and make")
    versions = run(["py3versions", "-s"], check=True).stdout.split()
    src = copy_tree(tmp_path / "src")
    shutil.rmtree(src / "tests")
    (src / "tests").mkdir()
    used = tmp_path / "used"
    (src / "tests/test_interpreter.py").write_text(
        f"import sys\n\ndef test_interpreter():\n    open({str(used)!r}, 'a').write(sys.executable + '\\n')\n")
    wrong = tmp_path / "wrong"
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("python3", "python", *versions):
        (fake / name).write_text(f"#!/bin/sh\necho \"$0 $*\" >> {wrong}\nexit 97\n")
        (fake / name).chmod(0o755)
    env = {k: v for k, v in CLEAN_ENV.items() if k != "DEB_BUILD_OPTIONS"}
    env["PATH"] = f"{fake}:{env['PATH']}"
    result = run(["make", "-f", "debian/rules", "override_dh_auto_test"], cwd=src, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not wrong.exists(), wrong.read_text()
    assert used.read_text().split() == [f"/usr/bin/{version}" for version in versions]


def test_man_page_documents_every_command_and_exit_status():
    page = (DEBIAN / "kexec-auto.8").read_text()
    from kexec_auto import cli

    commands = [action for action in cli.build_parser()._subparsers._group_actions  # type: ignore[union-attr]
                if action.dest == "command"][0].choices
    for command in commands:
        name = re.escape(command).replace(r"\-", r"\\?-")  # roff writes a hyphen as \-
        assert re.search(rf'^\.(B|BR|BI) "?{name}\b', page, re.M), command
    for key in ("ENABLED", "FLAVOUR", "PIN", "EXCLUDE", "CMDLINE", "EXTRA_CMDLINE", "REQUIRE_INITRD", "HANDOFF"):
        assert f"{key}=" in page, key
    for status in "0123":
        assert f".B {status}\n" in page
    if shutil.which("man"):
        result = run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(DEBIAN / "kexec-auto.8")],
                     env={**CLEAN_ENV, "MANWIDTH": "80"})
        assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_orders_the_shutdown_load_as_the_contract_says():
    unit = (DEBIAN / "kexec-auto-load.service").read_text()
    lines = {line for line in unit.splitlines() if not line.startswith("#")}
    for line in (
        # without default dependencies multi-user.target is not ordered after it
        "DefaultDependencies=no",
        "Requires=sysinit.target",
        # it stops before kexec-load (whose own load would otherwise come
        # last) and while the system bus still runs (busctl, for a trial)
        "After=sysinit.target basic.target local-fs.target kexec-load.service dbus.service",
        "Conflicts=shutdown.target",
        "Before=shutdown.target",
        "RequiresMountsFor=/boot",
        "ConditionVirtualization=!container",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStop=/usr/bin/kexec-auto load --at-shutdown",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    # starting it runs nothing: the boot waits for no Python process
    assert not [line for line in lines if line.startswith("ExecStart")], unit
    assert "debian/kexec-auto-load.service lib/systemd/system" in (DEBIAN / "kexec-auto.install").read_text()


def test_trial_watchdog_unit_holds_up_no_boot_target():
    unit = (DEBIAN / "kexec-auto-trial-watchdog.service").read_text()
    lines = [line for line in unit.splitlines() if not line.startswith("#")]
    for line in (
        "DefaultDependencies=no",
        "After=systemd-udev-trigger.service systemd-modules-load.service",
        # only the end of the trial waits for it
        "Before=kexec-auto-bless.service shutdown.target",
        "Conflicts=shutdown.target",
        "ConditionKernelCommandLine=kexec_auto.trial",
        # a shell program: no Python process, no reload of systemd
        "ExecStart=/usr/lib/kexec-auto/trial-watchdog start",
    ):
        assert line in lines, line
    before = [line for line in lines if line.startswith(("Before=", "RequiredBy=", "WantedBy="))]
    assert before == ["Before=kexec-auto-bless.service shutdown.target"], before
    assert (REPO / "hooks/libexec/trial-watchdog").read_text().startswith("#!/bin/sh\n")


def test_boot_unit_runs_early_but_holds_up_nothing():
    unit = (DEBIAN / "kexec-auto-boot.service").read_text()
    lines = {line for line in unit.splitlines() if not line.startswith("#")}
    for line in (
        # without default dependencies multi-user.target is not ordered after it
        "DefaultDependencies=no",
        "Requires=sysinit.target",
        "After=sysinit.target basic.target local-fs.target kexec-auto-load.service",
        "Conflicts=shutdown.target",
        "Before=shutdown.target",
        "RequiresMountsFor=/boot",
        "ConditionVirtualization=!container",
        "Type=oneshot",
        "ExecStart=/usr/bin/kexec-auto boot",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    assert not [line for line in lines if line.startswith("Before=") and "multi-user" in line]
    assert "debian/kexec-auto-boot.service lib/systemd/system" in (DEBIAN / "kexec-auto.install").read_text()


def test_bless_unit_runs_after_boot_complete():
    unit = (DEBIAN / "kexec-auto-bless.service").read_text()
    lines = {line for line in unit.splitlines() if not line.startswith("#")}
    for line in (
        "After=boot-complete.target multi-user.target kexec-auto-boot.service",
        "Requires=boot-complete.target",
        "ExecStart=/usr/bin/kexec-auto bless",
        "WantedBy=multi-user.target",
    ):
        assert line in lines, line
    assert "debian/kexec-auto-bless.service lib/systemd/system" in (DEBIAN / "kexec-auto.install").read_text()


def test_templates_pot_is_up_to_date(tmp_path):
    """debian/po/templates.pot must carry every translatable string."""
    if shutil.which("debconf-gettextize") is None:
        pytest.skip("po-debconf is not installed")
    pot = (DEBIAN / "po/templates.pot").read_text()
    templates = (DEBIAN / "templates").read_text()
    for short in re.findall(r"^_Description: (.*)$", templates, re.M):
        assert f'msgid "{short}"' in pot, short
    assert "msgid \"newest kernel of the running flavour\"" in pot


# -- maintainer scripts and the shutdown hook, run in a mount namespace ---------

def sourced_value(conf: Path, key: str) -> str:
    return run(["sh", "-c", f'. {shlex.quote(str(conf))}; printf "%s\\n" "${key}"'], check=True).stdout


# A kernel image is anything with the bzImage header; the core checks it.
BZIMAGE = b"\0" * 0x1F1 + b"\x01" + b"\0" * 0x10 + b"HdrS" + b"\0" * 0x1FA  # setup_sects 1: 1 KiB long


class Sandbox:
    """Runs sh scripts in a private mount namespace over a fake system."""

    def __init__(self, tmp: Path):
        if mount_namespace_problem():
            pytest.skip(mount_namespace_problem())
        self.tmp = tmp
        self.dirs = {d: tmp / "fs" / d.strip("/").replace("/", "_") for d in
                     ("/etc/default", "/var/lib", "/boot", "/run", "/sys/kernel")}
        for path in self.dirs.values():
            path.mkdir(parents=True)
        self.overlays = {}
        for d in ("/usr/bin", "/usr/sbin"):
            name = d.strip("/").replace("/", "_")
            upper, work = tmp / "overlay" / name, tmp / "overlay" / f"{name}.work"
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            self.overlays[d] = (upper, work)
        self.stub("/usr/bin/kexec-auto",
                  f'PYTHONPATH={shlex.quote(str(REPO / "src"))} exec /usr/bin/python3 -m kexec_auto "$@"')
        self.stub("/usr/sbin/kexec", f'echo "kexec $*" >> {shlex.quote(str(tmp / "kexec.log"))}')
        # Maintainer scripts, named as dpkg's frontend expects them.
        self.scripts = tmp / "scripts"
        self.scripts.mkdir()
        for name in ("config", "postinst", "postrm"):
            shutil.copy2(DEBIAN / name, self.scripts / f"kexec-auto.{name}")
        templates = run(["po2debconf", str(DEBIAN / "templates")], check=True).stdout
        (self.scripts / "kexec-auto.templates").write_text(templates)
        # A private debconf database.
        (tmp / "debconf.conf").write_text(
            "Config: configdb\nTemplates: templatedb\n\n"
            f"Name: configdb\nDriver: File\nFilename: {tmp}/config.dat\n\n"
            f"Name: templatedb\nDriver: File\nFilename: {tmp}/templates.dat\n"
        )
        self.env = {**CLEAN_ENV, "DEBCONF_SYSTEMRC": str(tmp / "debconf.conf"),
                    "DEBIAN_FRONTEND": "noninteractive"}
        self.env.pop("DEB_BUILD_OPTIONS")

    def stub(self, path: str, body: str) -> None:
        upper = self.overlays[str(Path(path).parent)][0]
        target = upper / Path(path).name
        target.write_text(f"#!/bin/sh\n{body}\n")
        target.chmod(0o755)

    def file(self, path: str) -> Path:
        for mount, real in self.dirs.items():
            if path.startswith(mount + "/"):
                return real / path[len(mount) + 1:]
        raise ValueError(path)

    def write(self, path: str, content, mode: int = 0o644) -> None:
        target = self.file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        target.chmod(mode)

    def read(self, path: str) -> str:
        return self.file(path).read_text()

    def sh(self, script: str) -> subprocess.CompletedProcess:
        mounts = [f"mount --bind {shlex.quote(str(real))} {mount}" for mount, real in self.dirs.items()]
        mounts += [
            f"mount -t overlay overlay -o lowerdir={d},upperdir={upper},workdir={work} {d}"
            for d, (upper, work) in self.overlays.items()
        ]
        inner = "set -e\n" + "\n".join(mounts) + "\nset +e\n" + script
        return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                   env=self.env, cwd=self.tmp)

    def preseed(self, *lines: str) -> None:
        selections = "".join(f"kexec-auto kexec-auto/{line}\n" for line in lines)
        result = run(["debconf-set-selections"], input=selections, env=self.env)
        assert result.returncode == 0, result.stderr

    def answer(self, question: str) -> str:
        result = run(["debconf-show", "kexec-auto"], env=self.env, check=True)
        for line in result.stdout.splitlines():
            name, _, value = line.lstrip("* ").partition(":")
            if name == f"kexec-auto/{question}":
                return value.strip()
        raise KeyError(question)

    def postinst(self, *args: str, reconfigure: bool = False) -> subprocess.CompletedProcess:
        prefix = "DEBCONF_RECONFIGURE=1 " if reconfigure else ""
        argv = " ".join(shlex.quote(a) for a in ("configure",) + args)
        return self.sh(f"{prefix}{self.scripts}/kexec-auto.postinst {argv}")

    def setting(self, key: str) -> str:
        return self.sh(f"kexec-auto get {key}").stdout.rstrip("\n")


RELEASE = "6.1.0-56-cloud-amd64"


@pytest.fixture
def box(tmp_path) -> Sandbox:
    box = Sandbox(tmp_path)
    for release in (RELEASE, "6.1.0-55-cloud-amd64"):
        box.write(f"/boot/vmlinuz-{release}", BZIMAGE)
        box.write(f"/boot/initrd.img-{release}", b"\x1f\x8b initrd")
    probe = box.sh("true")
    if probe.returncode != 0:
        pytest.skip(f"cannot set up a private mount namespace: {probe.stderr.strip()}")
    return box


@needs_root
def test_first_install_writes_preseeded_answers(box):
    box.preseed("kernels select fixed", f"release string {RELEASE}", "extra string quiet loglevel=3")
    result = box.postinst()
    assert result.returncode == 0, result.stderr
    conf = box.read("/etc/default/kexec-auto")
    assert conf.startswith("# Settings of kexec-auto")
    assert box.setting("PIN") == RELEASE
    assert box.setting("EXTRA_CMDLINE") == "quiet loglevel=3"
    assert box.setting("ENABLED") == "true"
    # "kexec-auto update" ran: /etc/default/kexec names the pinned kernel.
    assert f"KERNEL_IMAGE=/boot/vmlinuz-{RELEASE}" in box.read("/etc/default/kexec")


@needs_root
def test_a_machine_that_cannot_kexec_is_told_through_a_debconf_note(box):
    """What "kexec-auto debconf-note" prints (tests/test_cli.py: Secure Boot
    on arm64, an unknown architecture) reaches debconf as the note's reason.
    Here no machine is such a one, so the command's answer is stood in."""
    def note() -> str:
        database = (box.tmp / "config.dat").read_text()
        return database[database.index("Name: kexec-auto/firmware-reboots"):].split("\n\n")[0]

    assert box.postinst().returncode == 0
    assert "reason" not in note()
    why = "kernel lockdown (integrity, Secure Boot) allows kexec only through kexec_file_load"
    box.stub("/usr/bin/kexec-auto",
             f'[ "$1" = debconf-note ] && {{ echo "{why}"; exit 0; }}\n'
             f'PYTHONPATH={shlex.quote(str(REPO / "src"))} exec /usr/bin/python3 -m kexec_auto "$@"')
    result = box.postinst("0.1.0")
    assert result.returncode == 0, result.stderr
    assert f"reason = {why}" in note(), note()


@needs_root
def test_refused_answers_keep_the_file_and_do_not_fail(box):
    assert box.postinst().returncode == 0
    before = box.read("/etc/default/kexec-auto")
    # Not installed: refused by the postinst's own check.
    box.preseed("kernels select fixed", "release string 6.1.0-99-cloud-amd64")
    result = box.postinst("0.1.0")
    assert result.returncode == 0, result.stderr
    assert "6.1.0-99-cloud-amd64" in result.stderr and "not installed" in result.stderr
    assert box.read("/etc/default/kexec-auto") == before
    assert box.answer("kernels") == "running"
    # Installed, but "kexec-auto set" refuses it.
    box.write("/boot/vmlinuz-6.1.0@56", BZIMAGE)
    box.preseed("kernels select fixed", "release string 6.1.0@56")
    result = box.postinst("0.1.0")
    assert result.returncode == 0, result.stderr
    assert "6.1.0@56" in result.stderr
    assert box.read("/etc/default/kexec-auto") == before
    assert box.answer("kernels") == "running"


@needs_root
def test_hand_edits_survive_an_upgrade_and_show_in_debconf(box):
    assert box.postinst().returncode == 0
    conf = box.read("/etc/default/kexec-auto")
    box.write("/etc/default/kexec-auto",
              conf + "FLAVOUR=any\nEXTRA_CMDLINE='a b'\nCMDLINE=\"root=/dev/vda ro\"\n# mine\n")
    result = box.postinst("0.1.0")
    assert result.returncode == 0, result.stderr
    after = box.read("/etc/default/kexec-auto")
    assert "# mine" in after
    assert (box.setting("FLAVOUR"), box.setting("EXTRA_CMDLINE"), box.setting("CMDLINE")) == \
        ("any", "a b", "root=/dev/vda ro")
    assert box.answer("kernels") == "any"
    assert box.answer("cmdline") == "given"
    assert box.answer("cmdline_string") == "root=/dev/vda ro"


@needs_root
def test_a_named_flavour_is_kept_while_the_answer_stays_running(box):
    box.write("/etc/default/kexec-auto", "FLAVOUR=cloud-amd64\n")
    assert box.postinst().returncode == 0
    assert box.setting("FLAVOUR") == "cloud-amd64"
    assert box.answer("kernels") == "running"


@needs_root
def test_preseeded_reconfigure_changes_the_file(box):
    assert box.postinst().returncode == 0
    box.preseed("kernels select any", "enable boolean false")
    result = box.postinst(reconfigure=True)
    assert result.returncode == 0, result.stderr
    assert box.setting("FLAVOUR") == "any"
    assert box.setting("ENABLED") == "false"
    # And a reconfigure without a preseed leaves it so.
    assert box.postinst(reconfigure=True).returncode == 0
    assert (box.setting("FLAVOUR"), box.setting("ENABLED")) == ("any", "false")


@needs_root
def test_handoff_question_is_preseedable_and_read_back(box):
    assert box.postinst().returncode == 0
    assert box.setting("HANDOFF") == "false"
    box.preseed("handoff boolean true")
    assert box.postinst(reconfigure=True).returncode == 0
    assert box.setting("HANDOFF") == "true"
    # A hand edit back to false shows in debconf after the next configure.
    conf = box.read("/etc/default/kexec-auto").replace("HANDOFF=true", "HANDOFF=false")
    box.write("/etc/default/kexec-auto", conf)
    assert box.postinst("0.1.0").returncode == 0
    assert (box.setting("HANDOFF"), box.answer("handoff")) == ("false", "false")


def debconf_can_hold(value: str) -> bool:
    return "\\n" not in value  # kexec-auto refuses it: debconf reads it back as a line break


# Values as an administrator may write them; debconf used to collapse the
# spaces and dash's echo ate the backslashes.
debconf_value = st.lists(st.one_of(
    st.sampled_from(list(" \t\\'\"$`#;~:*") + ["\\c", "\\t", "  ", "\u2028", "\u00a0", "é", "\\\\"]),
    st.characters(blacklist_categories=("Cs", "Cc"))), max_size=16).map("".join).filter(debconf_can_hold)


def debconf_get(box: Sandbox, question: str) -> str:
    result = run(["debconf-communicate", "kexec-auto"], input=f"GET kexec-auto/{question}\n", env=box.env)
    assert result.stdout.startswith("0 ") or result.stdout == "0\n", result.stdout
    return result.stdout[2:].removesuffix("\n") if result.stdout.startswith("0 ") else ""


@needs_root
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(extra=debconf_value, cmdline=debconf_value)
@example(extra="back\\slash \\c and \\t", cmdline="  root=/dev/vda   ro\t")
@example(extra="a#b 'q' \"d\" $x `y`", cmdline="")
@example(extra="", cmdline="root=/dev/vda ro console=\"ttyS0 115200\"")
def test_every_value_means_the_same_to_sh_kexec_auto_and_dpkg_reconfigure(box, extra, cmdline):
    """Set by hand, then a configure (config seeds debconf from the file,
    the postinst writes the answers back): sh, kexec-auto and debconf all
    hold exactly the value, and the file still does."""
    conf = box.file("/etc/default/kexec-auto")
    result = box.sh(f"kexec-auto set {shlex.quote('EXTRA_CMDLINE=' + extra)} {shlex.quote('CMDLINE=' + cmdline)}")
    assert result.returncode == 0, result.stderr
    result = box.postinst("0.1.0")
    assert result.returncode == 0, result.stderr
    assert "refused" not in result.stderr, result.stderr
    for key, value in (("EXTRA_CMDLINE", extra), ("CMDLINE", cmdline)):
        assert sourced_value(conf, key) == value + "\n"
        assert box.sh(f"kexec-auto get {key}").stdout == value + "\n"
    assert debconf_get(box, "extra") == extra
    assert debconf_get(box, "cmdline") == ("given" if cmdline else "running")
    if cmdline:
        assert debconf_get(box, "cmdline_string") == cmdline
    synced = box.read("/var/lib/kexec-auto/debconf-answers").split("\n")
    assert f"extra {extra}" in synced


def accepted(text: bytes) -> bool:
    """Whether kexec-auto's parser takes the settings file ``text``."""
    from kexec_auto.config import ConfigError, parse_config

    try:
        parse_config(text.decode("utf-8"))
    except (UnicodeDecodeError, ConfigError):
        return False
    return len(text) <= 64 << 10


def setting_line(key: str, value: str) -> bytes:
    from kexec_auto.config import _quote

    return f"{key}={_quote(value)}".encode()


# An administrator's file: settings in the form kexec-auto writes them,
# between comment lines of any bytes (NUL included) that the parser takes.
comment = st.binary(max_size=40).filter(lambda b: b"\n" not in b).map(lambda b: b"#" + b)
admin_setting = st.one_of(
    st.sampled_from([("FLAVOUR", "any"), ("FLAVOUR", "cloud-amd64"), ("FLAVOUR", "running"), ("PIN", RELEASE),
                     ("PIN", ""), ("ENABLED", "false"), ("HANDOFF", "true"), ("TRIES", "3"),
                     ("EXCLUDE", "*-rt-* 6.1.0-9-*"), ("REQUIRE_INITRD", "false")]),
    st.tuples(st.sampled_from(["EXTRA_CMDLINE", "CMDLINE"]), debconf_value))
admin_file = st.lists(st.one_of(comment, admin_setting.map(lambda kv: setting_line(*kv))), max_size=8).map(
    lambda lines: b"".join(line + b"\n" for line in lines)).filter(accepted)


@needs_root
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=admin_file)
@example(text=b"FLAVOUR=any\n# caf\x00e\n")
@example(text=b"#\x00\nPIN=" + RELEASE.encode() + b"\n# \xc3\xa9 \x00\x01\n")
def test_an_admins_file_survives_every_configure_byte_for_byte(box, text):
    """Whatever kexec-auto's parser accepts, an upgrade's configure and a
    reconfigure (config seeds debconf from the file, the postinst writes the
    answers back) leave the file as it was, byte for byte, and debconf then
    shows what it says."""
    assert box.postinst().returncode == 0  # installed: the answers are synchronised
    conf = box.file("/etc/default/kexec-auto")
    conf.write_bytes(text)
    expected = {question: value for question, value in (
        line.split(" ", 1) for line in box.sh("kexec-auto debconf-answers").stdout.split("\n") if line)}
    for reconfigure in (False, True):
        result = box.postinst("0.1.0", reconfigure=reconfigure)
        assert result.returncode == 0, result.stderr
        assert "refused" not in result.stderr, result.stderr
        assert conf.read_bytes() == text
    for question, value in expected.items():
        assert debconf_get(box, question) == value, question


@needs_root
def test_disabling_through_debconf_leaves_no_kernel_named(box):
    assert box.postinst().returncode == 0
    assert f"KERNEL_IMAGE=/boot/vmlinuz-{RELEASE}" in box.read("/etc/default/kexec")
    box.preseed("enable boolean false")
    result = box.postinst(reconfigure=True)
    assert result.returncode == 0, result.stderr
    assert not box.file("/etc/default/kexec").exists()  # there was none before kexec-auto


@needs_root
def test_purge_removes_everything_and_the_kexec_file_kexec_auto_created(box):
    box.stub("/usr/bin/dpkg-query", "echo installed")  # kexec-tools stays installed
    assert box.postinst().returncode == 0
    assert box.file("/etc/default/kexec").exists()
    box.write("/etc/default/kexec.kexec-auto-old", "by hand\n")
    result = box.sh(f"{box.scripts}/kexec-auto.postrm purge")
    assert result.returncode == 0, result.stderr
    for path in ("/etc/default/kexec", "/etc/default/kexec-auto", "/etc/default/kexec.kexec-auto-old",
                 "/var/lib/kexec-auto/x"):
        assert not box.file(path).exists(), path
    assert not box.file("/var/lib/kexec-auto/x").parent.exists()


@needs_root
@pytest.mark.parametrize("kexec_tools,original", [
    ("installed", 'LOAD_KEXEC=false\nKERNEL_IMAGE="/vmlinuz"\nINITRD="/initrd.img"\nAPPEND=""\n'),
    # kexec-tools removed but not purged: its own purge deletes the file, a
    # reinstall reads it back. So it must be the original again.
    ("config-files", "LOAD_KEXEC=true\nKERNEL_IMAGE=/vmlinuz\nAPPEND='mine'\n"),
], ids=["kexec-tools-installed", "kexec-tools-removed-not-purged"])
def test_purge_gives_the_original_kexec_file_back(box, kexec_tools, original):
    box.stub("/usr/bin/dpkg-query", f"echo {kexec_tools}")
    box.write("/etc/default/kexec", original)
    assert box.postinst().returncode == 0
    assert box.read("/etc/default/kexec") != original
    assert box.sh(f"{box.scripts}/kexec-auto.postrm purge").returncode == 0
    assert box.read("/etc/default/kexec") == original


@needs_root
def test_purge_after_kexec_tools_was_purged_removes_only_kexec_autos_file(box):
    box.stub("/usr/bin/dpkg-query", "echo not-installed")
    box.write("/etc/default/kexec", "LOAD_KEXEC=false\n")
    assert box.postinst().returncode == 0
    assert box.sh(f"{box.scripts}/kexec-auto.postrm purge").returncode == 0
    assert not box.file("/etc/default/kexec").exists()
    # A file someone else wrote since is not kexec-auto's to delete.
    assert box.postinst().returncode == 0
    box.write("/etc/default/kexec", "# written by the administrator\n")
    assert box.sh(f"{box.scripts}/kexec-auto.postrm purge").returncode == 0
    assert box.read("/etc/default/kexec") == "# written by the administrator\n"


SHUTDOWN_HOOK = REPO / "hooks/system-shutdown/kexec-auto"


@needs_root
@pytest.mark.parametrize(
    "verb, marker, loaded, executes",
    [
        ("reboot", True, "1", True),
        ("poweroff", True, "1", False),
        ("halt", True, "1", False),
        ("kexec", True, "1", False),
        ("reboot", False, "1", False),
        ("reboot", True, "0", False),
        ("reboot", True, None, False),
        # systemd 262 (forky) passes no argument: the marker tells a reboot
        ("", True, "1", True),
        ("", False, "1", False),
        ("", True, "0", False),
    ],
)
def test_shutdown_hook_executes_only_what_kexec_auto_loaded_for_a_reboot(box, verb, marker, loaded, executes):
    box.file("/var/lib/kexec-auto").mkdir()
    if marker:
        box.write("/run/kexec-auto/loaded", f"/boot/vmlinuz-{RELEASE}\n")
    if loaded is not None:
        box.write("/sys/kernel/kexec_loaded", loaded + "\n")
    result = box.sh(f"{SHUTDOWN_HOOK} {verb}")
    assert result.returncode == 0, result.stderr
    log = box.tmp / "kexec.log"
    assert (log.read_text() if log.exists() else "") == ("kexec -e\n" if executes else "")
    # the stand-in kexec returns, as a failed kexec -e does: the next boot is told
    returned = box.file("/var/lib/kexec-auto/kexec-returned")
    assert (returned.read_text() if returned.exists() else None) == (
        f"0 /boot/vmlinuz-{RELEASE}\n" if executes else None)


@needs_root
def test_shutdown_hook_records_a_returning_kexec_on_a_read_only_file_system(box):
    """As systemd-shutdown leaves it: /var/lib read-only. The hook makes it
    writable for its record, says why the reboot is a firmware one, and
    leaves it read-only again."""
    box.write("/run/kexec-auto/loaded", f"/boot/vmlinuz-{RELEASE}\n")
    box.write("/sys/kernel/kexec_loaded", "1\n")
    box.stub("/usr/sbin/kexec", "exit 3")
    result = box.sh("mount -t tmpfs state /var/lib && mkdir /var/lib/kexec-auto"
                    " && mount -o remount,ro /var/lib || exit 99\n"
                    f"{SHUTDOWN_HOOK} reboot; echo \"hook=$?\"\n"
                    "cat /var/lib/kexec-auto/kexec-returned\n"
                    "findmnt -n -o OPTIONS /var/lib | tr , '\\n' | grep -x ro\n")
    assert result.stdout == f"hook=0\n3 /boot/vmlinuz-{RELEASE}\nro\n", result.stdout + result.stderr
    assert "kexec -e returned (exit status 3): rebooting through the firmware" in result.stderr


def test_shutdown_hook_is_posix_sh():
    assert SHUTDOWN_HOOK.read_text().startswith("#!/bin/sh\n")
    assert SHUTDOWN_HOOK.stat().st_mode & stat.S_IXUSR
    assert run(["sh", "-n", str(SHUTDOWN_HOOK)]).returncode == 0
    if shutil.which("checkbashisms"):
        assert run(["checkbashisms", str(SHUTDOWN_HOOK)]).returncode == 0


# -- piuparts ------------------------------------------------------------------

CACHE = Path(os.environ.get("KEXEC_AUTO_TEST_CACHE", "/var/cache/kexec-auto-tests"))
MIRROR = os.environ.get("KEXEC_AUTO_TEST_MIRROR", "http://deb.debian.org/debian")


@pytest.mark.chroot
def test_piuparts_install_upgrade_and_purge_leave_bookworm_clean(debs, tmp_path):
    """piuparts installs the .deb in a minimal bookworm (dependencies from the
    archive), removes and purges it; then installs a previous build with apt
    from a local repository, upgrades it to this one, and purges. It fails on
    any file left behind or any maintainer script error. The base tarball is
    cached."""
    if not is_root or shutil.which("piuparts") is None:
        pytest.skip("needs root and piuparts")
    # The previous build: this source with a lower version, so that the
    # upgrade runs every maintainer script with an older version installed.
    previous_src = copy_tree(tmp_path / "previous" / "src")
    changelog = previous_src / "debian/changelog"
    first, rest = changelog.read_text().split("\n", 1)
    version = re.search(r"\((.*?)\)", first).group(1)
    changelog.write_text(first.replace(f"({version})", f"({version}~prev)") + "\n" + rest)
    build(previous_src)
    repo = tmp_path / "repo"
    repo.mkdir()
    for deb in (tmp_path / "previous").glob("kexec-auto_*~prev_all.deb"):
        shutil.copy2(deb, repo)
    packages = run(["apt-ftparchive", "packages", "."], cwd=repo, env=CLEAN_ENV, check=True).stdout
    assert f"Version: {version}~prev" in packages
    (repo / "Packages").write_text(packages)

    CACHE.mkdir(parents=True, exist_ok=True)
    base = CACHE / "piuparts-bookworm.tgz"
    where = ["-b", str(base)] if base.exists() else ["--save", str(base)]
    result = run(
        ["piuparts", "-d", "bookworm", "-m", MIRROR, *where,
         f"--extra-repo=deb [trusted=yes] file://{repo} ./", f"--bindmount={repo}", str(debs["dh"])],
        env=CLEAN_ENV, cwd=tmp_path, timeout=1500,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "PASS: All tests." in log, "\n".join(log.splitlines()[-60:])
    assert "Setting up kexec-auto" in log
    # The upgrade test really ran: the previous build first, then this one.
    assert f"Setting up kexec-auto ({version}~prev)" in log
    assert f"Unpacking kexec-auto ({version}) over ({version}~prev)" in log
