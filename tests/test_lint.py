"""Lint and type checks, run as ordinary tests: flake8 over the package,
the Python kernel hooks and the tests; mypy over the package.

Both tools come from Debian (python3-flake8, mypy), installed by
.ci/deps; a build of the package that lacks them skips these two."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO

PYTHON_HOOKS = [REPO / "hooks" / kind / "kexec-auto" for kind in ("postinst.d", "postrm.d", "post-update.d")]


def tool(module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (Debian: {'python3-flake8' if module == 'flake8' else 'mypy'})")
    return [sys.executable, "-m", module]


def test_flake8_is_clean():
    result = subprocess.run([*tool("flake8"), "src", "tests", *map(str, PYTHON_HOOKS)],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    result = subprocess.run([*tool("mypy"), "--no-incremental", "--cache-dir=/dev/null"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
