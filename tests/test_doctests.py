"""The examples in the modules' docstrings are tests too: every module's
are run, and every module of the pure core has some."""

import doctest
import importlib

import pytest

from test_layout import LAYERS, modules


@pytest.mark.parametrize("name", modules())
def test_doctests(name):
    module = importlib.import_module("kexec_auto" if name == "__init__" else f"kexec_auto.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0
    if name in LAYERS["core"]:
        assert result.attempted > 0, f"{name}: the pure core shows itself in examples"
