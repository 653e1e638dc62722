"""CI's share of the slow tests, and the full matrix.

Without KEXEC_AUTO_TEST_MATRIX=full the suite runs one representative of
every boot path, failure mode and release-specific behaviour (what CI
runs, README); the other parameters are collected and show as skipped,
with the variable that runs them.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import pytest

MATRIX_ENV = "KEXEC_AUTO_TEST_MATRIX"
FULL_ONLY = pytest.mark.skip(reason=f"in the full matrix only: {MATRIX_ENV}=full")


def full_matrix() -> bool:
    return os.environ.get(MATRIX_ENV) == "full"


def in_matrix(values: Sequence[object], ci: Sequence[object],
              ids: Callable[[object], str] | None = None) -> list[object]:
    """values as pytest parameters: those of CI's share run everywhere, the
    others only in the full matrix (elsewhere they show as skipped, with
    the command that runs them)."""
    return [pytest.param(value, marks=() if full_matrix() or value in ci else FULL_ONLY,
                         id=ids(value) if ids else None)
            for value in values]
