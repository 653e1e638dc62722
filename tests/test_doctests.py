"""The examples in the modules' docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["release", "config", "cmdline", "policy", "render", "hook", "assess", "reboot", "report", "lastboot", "metrics"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"kexec_auto.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0
