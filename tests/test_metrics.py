"""The metrics file for prometheus-node-exporter's textfile collector,
parsed with prometheus_client's parser (Debian's python3-prometheus-client),
as kexec-auto's commands and hooks change the state."""

import json
import os
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO
from kexec_auto import __version__, cli, metrics, report

PROVIDER = "6.1.0-40-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
NEW = "6.12.117+deb12-cloud-amd64"
PROM = "/var/lib/prometheus/node-exporter/kexec-auto.prom"


def parse(text):
    """{family name: {frozenset(labels): value}}, through the real parser;
    also checks that every family has HELP and TYPE and the common prefix."""
    families = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("kexec_auto_"), family.name
        assert family.documentation, f"{family.name}: no HELP"
        assert family.type == "gauge", family
        families[family.name] = {frozenset(s.labels.items()): s.value for s in family.samples}
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert helps == types == list(families), (helps, types, list(families))
    return families


def value(families, name, **labels):
    return families[name][frozenset(labels.items())]


def loader(root, byte):
    """The boot header the running kernel kept: type_of_loader at 0x210."""
    root.write("/sys/kernel/boot_params/data", b"\0" * 0x210 + bytes([byte]) + b"\0" * 0x100)


@pytest.fixture
def machine(machine):
    """A machine that booted the provider's kernel, with two newer kernels
    and prometheus-node-exporter installed."""
    machine.running(PROVIDER)
    for release in (PROVIDER, OLD, NEW):
        machine.add_kernel(release)
    loader(machine, 0xB0)  # qemu's -kernel: the provider's firmware
    (machine.path / PROM.lstrip("/")).parent.mkdir(parents=True)
    return machine


def kexec_auto(root, *args):
    return cli.main([*args, "--root", str(root)])


def current(root):
    return parse(root.read(PROM))


def test_file_follows_every_state_change(machine):
    assert kexec_auto(machine, "update") == 0
    m = current(machine)
    assert value(m, "kexec_auto_running_kernel_info", release=PROVIDER) == 1
    assert value(m, "kexec_auto_selected_kernel_info", release=NEW) == 1
    assert value(m, "kexec_auto_running_selected_kernel") == 0
    assert value(m, "kexec_auto_enabled") == 1
    assert value(m, "kexec_auto_config_ok") == 1
    assert value(m, "kexec_auto_boot_method", method="firmware") == 1
    assert value(m, "kexec_auto_boot_method", method="kexec") == 0
    assert value(m, "kexec_auto_kernels_bad") == 0
    assert m["kexec_auto_last_trial_outcome"] == {}

    # The reboot loads NEW at shutdown: a trial starts.
    assert kexec_auto(machine, "load", "--at-shutdown") == 0
    m = current(machine)
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="pending") == 1
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="good") == 0
    started = value(m, "kexec_auto_last_trial_timestamp_seconds", release=NEW)

    # NEW comes up through kexec, then reaches a healthy state.
    machine.running(NEW)
    loader(machine, 0xD0)
    assert kexec_auto(machine, "boot") == 0
    m = current(machine)
    assert value(m, "kexec_auto_running_selected_kernel") == 1
    assert value(m, "kexec_auto_boot_method", method="kexec") == 1
    assert value(m, "kexec_auto_boot_method", method="firmware") == 0
    assert kexec_auto(machine, "bless") == 0
    m = current(machine)
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="good") == 1
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="pending") == 0
    assert value(m, "kexec_auto_last_trial_timestamp_seconds", release=NEW) >= started

    # The next trial of NEW fails: the provider's kernel comes back.
    assert kexec_auto(machine, "load", "--at-shutdown") == 0
    machine.running(PROVIDER)
    loader(machine, 0xB0)
    machine.file("/run/kexec-auto/boot-method").unlink()  # /run is empty after a reset
    assert kexec_auto(machine, "boot") == 0
    m = current(machine)
    # one failed trial of TRIES=2: counted, still selected
    assert value(m, "kexec_auto_kernel_failed_trials", release=NEW) == 1
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="failed") == 1
    assert value(m, "kexec_auto_selected_kernel_info", release=NEW) == 1
    assert value(m, "kexec_auto_kernels_bad") == 0
    # the second one marks it bad
    assert kexec_auto(machine, "load", "--at-shutdown") == 0
    machine.file("/run/kexec-auto/boot-method").unlink()
    assert kexec_auto(machine, "boot") == 0
    m = current(machine)
    assert m["kexec_auto_kernel_failed_trials"] == {}
    assert value(m, "kexec_auto_kernels_bad") == 1
    assert value(m, "kexec_auto_kernel_bad", release=NEW) == 1
    assert value(m, "kexec_auto_selected_kernel_info", release=OLD) == 1
    assert value(m, "kexec_auto_last_trial_outcome", release=NEW, outcome="bad") == 1
    assert value(m, "kexec_auto_boot_method", method="firmware") == 1

    assert kexec_auto(machine, "forget", NEW) == 0
    m = current(machine)
    assert value(m, "kexec_auto_kernels_bad") == 0
    assert m["kexec_auto_kernel_bad"] == {}
    assert value(m, "kexec_auto_selected_kernel_info", release=NEW) == 1


def test_handoff_is_told_apart_from_a_kexec_reboot(machine):
    machine.config("HANDOFF=true\n")
    assert kexec_auto(machine, "boot") == 0  # provider kernel: hands off to NEW
    assert value(current(machine), "kexec_auto_boot_method", method="firmware") == 1
    assert machine.read("/var/lib/kexec-auto/handoff") == f"{NEW}\n"
    machine.running(NEW)
    loader(machine, 0xD0)
    machine.file("/run/kexec-auto/boot-method").unlink()
    assert kexec_auto(machine, "boot") == 0
    assert value(current(machine), "kexec_auto_boot_method", method="handoff") == 1
    assert not machine.exists("/var/lib/kexec-auto/handoff")
    # the unit started again in the same boot (a package upgrade): still a hand-off
    assert kexec_auto(machine, "boot") == 0
    assert value(current(machine), "kexec_auto_boot_method", method="handoff") == 1


def test_kernel_hook_refreshes_the_file(machine, src_env):
    machine.remove_kernel(NEW)
    assert kexec_auto(machine, "update") == 0
    assert value(current(machine), "kexec_auto_selected_kernel_info", release=OLD) == 1
    machine.add_kernel(NEW)
    env = dict(src_env, KEXEC_AUTO_ROOT=str(machine), DEB_MAINT_PARAMS=f"configure {NEW}")
    result = subprocess.run(
        ["run-parts", "--report", "--exit-on-error", f"--arg={NEW}", f"--arg=/boot/vmlinuz-{NEW}",
         str(REPO / "hooks/postinst.d")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert value(current(machine), "kexec_auto_selected_kernel_info", release=NEW) == 1


def test_written_atomically_only_when_changed(machine):
    assert kexec_auto(machine, "update") == 0
    path = machine.file(PROM)
    before = os.stat(path)
    assert kexec_auto(machine, "update") == 0
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert oct(after.st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in path.parent.iterdir()) == ["kexec-auto.prom"]  # no temporary file left
    machine.config("PIN=" + OLD + "\n")
    assert kexec_auto(machine, "update") == 0
    assert os.stat(path).st_ino != before.st_ino  # replaced by rename, never rewritten in place
    assert value(current(machine), "kexec_auto_selected_kernel_info", release=OLD) == 1


def test_nothing_written_without_node_exporter(machine):
    machine.file(PROM).parent.rmdir()
    assert kexec_auto(machine, "update") == 0
    assert list(machine.file("/var/lib/prometheus").iterdir()) == []


def test_invalid_settings_show_as_config_not_ok(machine, capsys):
    assert kexec_auto(machine, "update") == 0
    machine.config("ENABLED=perhaps\n")
    assert kexec_auto(machine, "update") == 1
    m = current(machine)
    assert value(m, "kexec_auto_config_ok") == 0
    assert value(m, "kexec_auto_running_kernel_info", release=PROVIDER) == 1
    assert set(m) == set(metrics.CONFIG_ERROR_FAMILIES)


def test_pin_that_cannot_be_used_counts_as_a_selection_error(machine):
    machine.config("PIN=6.1.0-1-cloud-amd64\n")
    assert kexec_auto(machine, "update") == 1
    assert value(current(machine), "kexec_auto_selection_errors") == 1


def test_render_escapes_label_values_and_keeps_every_family():
    status = {"running": 'we"ird\\release\nx', "selected": None, "bad_kernels": {}}
    m = parse(metrics.render(status, "0.1.0"))
    assert value(m, "kexec_auto_running_kernel_info", release='we"ird\\release\nx') == 1
    assert m["kexec_auto_selected_kernel_info"] == {}
    assert set(m) == {f.name for f in metrics.FAMILIES}


def test_rendered_from_the_status_json_schema(machine, capsys):
    assert kexec_auto(machine, "update") == 0
    capsys.readouterr()
    kexec_auto(machine, "status", "--json")
    status = json.loads(capsys.readouterr().out)
    assert status["schema_version"] == report.STATUS_SCHEMA == 1
    assert metrics.render(status, __version__) == machine.read(PROM)


def promtool() -> str:
    """promtool from Debian's prometheus package, unpacked (not installed:
    that would start a Prometheus server) into the shared test cache."""
    import fcntl
    from pathlib import Path

    cache = Path(os.environ.get("KEXEC_AUTO_TEST_CACHE") or "/var/cache/kexec-auto-tests") / "promtool"
    cache.mkdir(parents=True, exist_ok=True)
    tool = cache / "usr/bin/promtool"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tool.exists():
            download = ["apt-get", "download", "-q", "prometheus"]
            if subprocess.run(download, cwd=cache, capture_output=True, timeout=600).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=600)
                subprocess.run(download, cwd=cache, check=True, capture_output=True, timeout=600)
            deb = next(cache.glob("prometheus_*.deb"))
            subprocess.run(["dpkg-deb", "-x", deb, cache], check=True, timeout=300)
            deb.unlink()
    return str(tool)


@pytest.mark.package
def test_promtool_finds_nothing_to_lint(machine):
    machine.config("PIN=" + OLD + "\n")
    kexec_auto(machine, "update")
    kexec_auto(machine, "load", "--at-shutdown")
    text = machine.read(PROM)
    assert "kexec_auto_last_trial_outcome{" in text
    result = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def man_section(title):
    import re

    text = (REPO / "debian/kexec-auto.8").read_text()
    return re.search(rf"^\.SH {title}\n(.*?)^\.SH ", text, re.S | re.M).group(1)


def test_man_page_documents_every_status_field(machine, capsys):
    import re

    kexec_auto(machine, "update")
    capsys.readouterr()
    kexec_auto(machine, "status", "--json")
    status = json.loads(capsys.readouterr().out)
    section = man_section("STATUS JSON")
    tagged = set(re.findall(r"^\.TP\n\.BR (.*)$", section, re.M))
    documented = {word for line in tagged for word in re.findall(r"[a-z_]+", line.split(" (")[0])}
    assert set(status) <= documented, set(status) - documented
    trial = report.last_trial(report.assess.BootState(trying=NEW, trying_since="x"))
    assert all(f".B {field}\n" in section for field in trial)
    assert f"The version of this schema: {report.STATUS_SCHEMA}." in section


def test_man_page_documents_every_metric():
    section = man_section("METRICS")
    for family in metrics.FAMILIES:
        assert f"\n.BR {family.name} {{" in section or f"\n.B {family.name}\n" in section, family.name
