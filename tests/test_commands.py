import subprocess

import pytest

from kexec_auto import commands


def test_jobs_reads_systemctl_and_tells_a_failure_from_no_jobs(monkeypatch):
    answers = {}
    monkeypatch.setattr(commands, "which", lambda name: "/usr/bin/systemctl")
    monkeypatch.setattr(commands, "run", lambda argv: subprocess.CompletedProcess(argv, *answers["reply"]))
    answers["reply"] = (0, "  118 reboot.target start waiting\n  120 kexec-auto-load.service stop running\n", "")
    assert [job.unit for job in commands.jobs()] == ["reboot.target", "kexec-auto-load.service"]
    assert [job.state for job in commands.jobs()] == ["waiting", "running"]
    answers["reply"] = (0, "", "")
    assert commands.jobs() == []
    answers["reply"] = (1, "", "Failed to connect to system scope bus via local transport: No such file or directory\n")
    with pytest.raises(commands.JobsUnknown, match="^Failed to connect to system scope bus"):
        commands.jobs()
