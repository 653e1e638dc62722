"""kexec-auto's debconf questions and the settings they stand for, both ways.

The settings file is the truth.  The config script seeds debconf from
:func:`answers` (``kexec-auto debconf-answers``), the postinst writes the
answers back with :func:`settings` (``kexec-auto debconf-apply``); both
read the file with kexec-auto's own parser.

>>> answers(Config(flavour="any", extra_cmdline="quiet"))
[('enable', 'true'), ('kernels', 'any'), ('cmdline', 'running'), ('extra', 'quiet'), ('handoff', 'false')]
>>> settings({"kernels": "running", "cmdline": "given", "cmdline_string": "root=/dev/vda"}, Config(flavour="any"))
[('kernels', ['FLAVOUR=running', 'PIN=']), ('cmdline_string', ['CMDLINE=root=/dev/vda'])]
"""

from __future__ import annotations

from typing import Mapping

from .config import Config

#: every question, in the order the config script asks them
QUESTIONS = ("enable", "kernels", "release", "cmdline", "cmdline_string", "extra", "handoff")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def answers(config: Config) -> list[tuple[str, str]]:
    """The debconf answers that show ``config``.  ``release`` and
    ``cmdline_string`` come only when the file sets them: otherwise debconf
    keeps the last one given, for when that choice is made again.  A
    flavour named by hand shows as "running", which debconf's choices keep
    (see :func:`settings`)."""
    kernels = "fixed" if config.pin else "any" if config.flavour == "any" else "running"
    result = [("enable", _flag(config.enabled)), ("kernels", kernels)]
    if config.pin:
        result.append(("release", config.pin))
    result.append(("cmdline", "given" if config.cmdline else "running"))
    if config.cmdline:
        result.append(("cmdline_string", config.cmdline))
    result += [("extra", config.extra_cmdline), ("handoff", _flag(config.handoff))]
    return result


def settings(given: Mapping[str, str], config: Config) -> list[tuple[str, list[str]]]:
    """The settings (KEY=VALUE) the answers in ``given`` stand for, per
    question that decides them, in order; ``config`` is what the file holds
    now.  A fixed release comes as ``PIN=`` its release (whether it is
    installed is for the caller to check); "running" keeps a flavour named
    by hand, which debconf has no choice for."""
    result: list[tuple[str, list[str]]] = []
    if "enable" in given:
        result.append(("enable", [f"ENABLED={given['enable']}"]))
    kernels = given.get("kernels")
    if kernels == "fixed":
        result.append(("release", [f"PIN={given.get('release', '')}"]))
    elif kernels == "any":
        result.append(("kernels", ["FLAVOUR=any", "PIN="]))
    elif kernels is not None:
        result.append(("kernels", ["FLAVOUR=running", "PIN="] if config.flavour == "any" else ["PIN="]))
    if given.get("cmdline") == "given":
        result.append(("cmdline_string", [f"CMDLINE={given.get('cmdline_string', '')}"]))
    elif "cmdline" in given:
        result.append(("cmdline", ["CMDLINE="]))
    if "extra" in given:
        result.append(("extra", [f"EXTRA_CMDLINE={given['extra']}"]))
    if "handoff" in given:
        result.append(("handoff", [f"HANDOFF={given['handoff']}"]))
    return result
