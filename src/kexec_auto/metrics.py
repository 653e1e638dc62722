"""kexec-auto's state as metrics for prometheus-node-exporter's textfile collector.

The collector reads /var/lib/prometheus/node-exporter/*.prom.

:func:`render` is pure: it turns the data of ``kexec-auto status --json``
(see kexec-auto(8)) into the Prometheus text format.  report.write_metrics
writes it, whenever kexec-auto's state changes.

Names follow Prometheus' conventions: the ``kexec_auto_`` prefix, base units
(seconds since the epoch), ``_info`` series (value 1) carrying strings in
labels, and one series per state, valued 0 or 1, for enumerations.

>>> text = render({"enabled": True, "running": "6.1.0-50-cloud-amd64",
...                "selected": "6.12.117+deb12-cloud-amd64", "next_reboot_ok": True}, "0.1.0")
>>> print("\\n".join(line for line in text.splitlines() if "selected" in line and not line.startswith("#")))
kexec_auto_selected_kernel_info{release="6.12.117+deb12-cloud-amd64"} 1
kexec_auto_running_selected_kernel 0
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Optional

from .clock import epoch

TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
FILE_NAME = "kexec-auto.prom"
BOOT_METHODS = ("kexec", "firmware", "handoff", "unknown")
TRIAL_OUTCOMES = ("pending", "good", "failed", "bad")

Labels = Mapping[str, str]
# What is still known when the settings cannot be read.
CONFIG_ERROR_FAMILIES = ("kexec_auto_info", "kexec_auto_config_ok", "kexec_auto_running_kernel_info")


@dataclasses.dataclass(frozen=True)
class Family:
    """One metric family: name, help text, and how to get its samples
    (label set and value) from the status data."""

    name: str
    help: str
    samples: Callable[[Mapping], Iterable[tuple[Labels, float]]]
    type: str = "gauge"


def _flag(value: object) -> list[tuple[Labels, float]]:
    return [({}, 1.0 if value else 0.0)]


def _states(current: Optional[str], states: Iterable[str], label: str,
            extra: Optional[Labels] = None) -> list[tuple[Labels, float]]:
    return [({**(extra or {}), label: s}, 1.0 if s == current else 0.0) for s in states]


def _last_trial(status: Mapping) -> Mapping:
    return status.get("last_trial") or {}


def _trial_time(status: Mapping) -> list[tuple[Labels, float]]:
    trial = _last_trial(status)
    when = epoch(trial.get("time"))
    return [({"release": trial["release"]}, when)] if trial and when is not None else []


def _trial_outcome(status: Mapping) -> list[tuple[Labels, float]]:
    trial = _last_trial(status)
    if not trial:
        return []
    return _states(trial.get("outcome"), TRIAL_OUTCOMES, "outcome", {"release": trial["release"]})


FAMILIES: tuple[Family, ...] = (
    Family("kexec_auto_info", "Version of kexec-auto that wrote these metrics.",
           lambda s: [({"version": s["version"]}, 1.0)]),
    Family("kexec_auto_config_ok",
           "Whether /etc/default/kexec-auto could be read (0: an invalid setting; then only this, "
           "kexec_auto_info and the running kernel are reported).",
           lambda s: _flag(not s.get("config_error"))),
    Family("kexec_auto_enabled", "Whether kexec-auto manages reboots (ENABLED in /etc/default/kexec-auto).",
           lambda s: _flag(s.get("enabled"))),
    Family("kexec_auto_running_kernel_info", "Release of the running kernel.",
           lambda s: [({"release": s.get("running") or ""}, 1.0)]),
    Family("kexec_auto_selected_kernel_info", "Release of the kernel kexec-auto selected for the next reboot.",
           lambda s: [({"release": s["selected"]}, 1.0)] if s.get("selected") else []),
    Family("kexec_auto_running_selected_kernel",
           "Whether the running kernel is the selected one (0: a reboot would change the kernel).",
           lambda s: _flag(s.get("selected") and s.get("selected") == s.get("running"))),
    Family("kexec_auto_next_reboot_ok", "Whether the next reboot boots the selected kernel through kexec.",
           lambda s: _flag(s.get("next_reboot_ok"))),
    Family("kexec_auto_selection_errors",
           "Number of errors in selecting a kernel (a PIN that cannot be used, no selectable kernel); "
           "kexec-auto status shows them.",
           lambda s: [({}, float(len(s.get("errors") or ())))]),
    Family("kexec_auto_boot_method",
           "How the running system was booted: kexec, firmware, handoff (kexec from a power-on kernel) "
           "or unknown; 1 for the way it happened.",
           lambda s: _states(s.get("boot_method") or "unknown", BOOT_METHODS, "method")),
    Family("kexec_auto_kernels_bad", "Number of kernels marked bad: they failed to boot and are not selected.",
           lambda s: [({}, float(len(s.get("bad_kernels") or {})))]),
    Family("kexec_auto_boot_state_damaged",
           "Whether the boot state was found damaged and what it lost is not yet acknowledged "
           "(kexec-auto acknowledge): marks may be missing.",
           lambda s: _flag(s.get("boot_state_damage"))),
    Family("kexec_auto_kernel_bad", "A kernel marked bad (one series per such kernel).",
           lambda s: [({"release": r}, 1.0) for r in sorted(s.get("bad_kernels") or {})]),
    Family("kexec_auto_kernel_failed_trials",
           "Failed trial boots in a row of a kernel that still has tries left (one series per such kernel).",
           lambda s: [({"release": r}, float(v["failed_trials"]))
                      for r, v in sorted((s.get("failed_kernels") or {}).items())]),
    Family("kexec_auto_trial_boot", "Whether the running boot is a trial whose safety net is still armed.",
           lambda s: _flag(s.get("trial_boot"))),
    Family("kexec_auto_last_trial_timestamp_seconds",
           "When the last kernel trial started if it is pending, else when it was judged.",
           _trial_time),
    Family("kexec_auto_last_trial_outcome",
           "Outcome of the last kernel trial: pending, good, failed (tries left) or bad; 1 for the outcome.",
           _trial_outcome),
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def render(status: Mapping, version: str, families: Iterable[Family] = FAMILIES) -> str:
    """The metrics file for ``status`` (the data of ``kexec-auto status
    --json``).  Every family gets its HELP and TYPE lines, even without
    samples, so that the file always tells what it can hold."""
    data = {**status, "version": version}
    if data.get("config_error"):
        families = [f for f in families if f.name in CONFIG_ERROR_FAMILIES]
    lines = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples(data):
            text = ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items())
            lines.append(f"{family.name}{{{text}}} {_value(value)}" if text else f"{family.name} {_value(value)}")
    return "\n".join(lines) + "\n"
