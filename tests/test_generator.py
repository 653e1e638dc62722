"""The trial generator and the units of a trial boot's safety net.

The generator is run for real (dash, as systemd runs it) on command lines
given through a file; the units it writes and the ones the package ships
are checked with systemd-analyze verify, then their settings compared with
what the safety net needs.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GENERATOR = REPO / "hooks/system-generators/kexec-auto-trial-generator"
DEBIAN = REPO / "debian"


def generate(tmp_path: Path, cmdline: str, trial_over: bool = False) -> Path:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    out = tmp_path / "normal"
    for d in ("normal", "early", "late"):
        (tmp_path / d).mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "KEXEC_AUTO_CMDLINE": str(tmp_path / "cmdline"),
           "KEXEC_AUTO_TRIAL_OVER": str(tmp_path / "trial-over")}
    if trial_over:
        (tmp_path / "trial-over").write_text("")
    result = subprocess.run(["dash", str(GENERATOR), str(out), str(tmp_path / "early"), str(tmp_path / "late")],
                            env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result
    return out


def listing(out: Path) -> dict[str, str]:
    found = {}
    for path in sorted(out.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(out))] = os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(out))] = "file"
    return found


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return parser


def test_a_trial_boot_gets_the_whole_net(tmp_path):
    out = generate(tmp_path, "BOOT_IMAGE=/vmlinuz root=/dev/vda ro kexec_auto.trial=120 panic=10")
    found = listing(out)
    assert set(found) == {
        "emergency.target.wants/kexec-auto-fail-trial@emergency.service",
        "rescue.target.wants/kexec-auto-fail-trial@rescue.service",
        "sysinit.target.wants/kexec-auto-trial-watchdog.service",
        "timers.target.wants/kexec-auto-trial-deadline.timer",
        "kexec-auto-trial-deadline.timer",
        "kexec-auto-bless.service.d/50-kexec-auto-trial.conf",
    }
    assert found["emergency.target.wants/kexec-auto-fail-trial@emergency.service"].endswith(
        "/systemd/system/kexec-auto-fail-trial@.service")
    assert found["timers.target.wants/kexec-auto-trial-deadline.timer"] == "../kexec-auto-trial-deadline.timer"
    timer = unit(out / "kexec-auto-trial-deadline.timer")
    assert timer["Timer"]["OnBootSec"] == "120s"
    assert timer["Timer"]["Unit"] == "kexec-auto-fail-trial@deadline.service"
    backstop = unit(out / "kexec-auto-bless.service.d/50-kexec-auto-trial.conf")
    assert dict(backstop["Unit"]) == {"JobTimeoutSec": "180s", "JobTimeoutAction": "reboot-force"}


@pytest.mark.parametrize("cmdline", [
    "root=/dev/vda ro",                      # no trial
    "root=/dev/vda ro kexec_auto.trial=",    # malformed: no net rather than a wrong one
    "root=/dev/vda ro kexec_auto.trial=5m",
    "root=/dev/vda ro kexec_auto.trialx=300",
])
def test_any_other_boot_gets_nothing(tmp_path, cmdline):
    assert listing(generate(tmp_path, cmdline)) == {}


def test_nothing_once_the_trial_is_over(tmp_path):
    assert listing(generate(tmp_path, "ro kexec_auto.trial=300", trial_over=True)) == {}


def test_a_tiny_deadline_is_raised_to_30_seconds(tmp_path):
    out = generate(tmp_path, "ro kexec_auto.trial=3")
    assert unit(out / "kexec-auto-trial-deadline.timer")["Timer"]["OnBootSec"] == "30s"


def test_generator_is_sh_run_by_dash():
    assert GENERATOR.read_text().startswith("#!/bin/sh\n")
    assert os.access(GENERATOR, os.X_OK)
    assert subprocess.run(["dash", "-n", str(GENERATOR)]).returncode == 0


def test_units_verify(tmp_path):
    out = generate(tmp_path, "ro kexec_auto.trial=300")
    units = tmp_path / "units"
    units.mkdir()
    for name in ("kexec-auto-fail-trial@.service", "kexec-auto-trial-watchdog.service",
                 "kexec-auto-bless.service", "kexec-auto-load.service"):
        shutil.copy(DEBIAN / name, units / name)
    shutil.copy(out / "kexec-auto-trial-deadline.timer", units)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "kexec-auto-trial-deadline.timer",
         "kexec-auto-fail-trial@deadline.service", "kexec-auto-trial-watchdog.service"],
        cwd=units, capture_output=True, text=True, env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"})
    # the package's programs, where it is not installed
    missing = [f"Command {path} is not executable"
               for path in ("/usr/bin/kexec-auto", "/usr/lib/kexec-auto/trial-watchdog") if not Path(path).exists()]
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if line and not any(m in line for m in missing)]
    assert complaints == [], result.stdout + result.stderr


def test_units_of_the_net_run_only_on_trial_boots_and_never_block_one():
    for name in ("kexec-auto-fail-trial@.service", "kexec-auto-trial-watchdog.service"):
        parsed = unit(DEBIAN / name)
        assert parsed["Unit"]["ConditionKernelCommandLine"] == "kexec_auto.trial", name
        assert parsed["Unit"]["ConditionPathExists"] == "!/run/kexec-auto/trial-over", name
        assert parsed["Unit"]["DefaultDependencies"] == "no", name
        assert "Install" not in parsed, f"{name} must only be pulled in by the generator"
    fail = unit(DEBIAN / "kexec-auto-fail-trial@.service")
    assert fail["Service"]["ExecStart"] == "/usr/bin/kexec-auto fail-trial %i"
    assert fail["Service"]["FailureAction"] == "reboot-force"
