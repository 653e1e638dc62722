"""Fixtures of the VM suite: every needed (suite, scenario) VM chain runs once.

The first test that asks for a chain starts all the chains the collected
tests need, two at a time (one qemu per core, -smp 1, TCG), longest first, so
that bookworm and trixie boot side by side.  Tests then only read the
recorded boots and assert.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, Iterator

import pytest

from . import guest, scenarios, unattended

# longest chains first: they decide how long the session takes
BUILDERS: dict[str, tuple[int, Callable[[str], scenarios.Built]]] = {
    "main": (3, scenarios.build_main),
    "smoke": (1, scenarios.build_smoke),
    "fallback": (2, scenarios.build_fallback),
    "handoff": (4, scenarios.build_handoff),
    "unattended": (5, unattended.build_unattended),
}


class Runs:
    def __init__(self, wanted: set[tuple[str, str]]):
        self.wanted = wanted
        self.lock = threading.Lock()
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.futures: dict[tuple[str, str], concurrent.futures.Future[tuple[scenarios.Built, guest.Chain]]] = {}

    def _one(self, suite: str, scenario: str) -> tuple[scenarios.Built, guest.Chain]:
        built = BUILDERS[scenario][1](suite)
        return built, scenarios.boot_chain(built, **built.chain_options)

    def get(self, suite: str, scenario: str) -> tuple[scenarios.Built, guest.Chain]:
        with self.lock:
            if self.pool is None:
                self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
                order = sorted(self.wanted | {(suite, scenario)},
                               key=lambda key: (-BUILDERS[key[1]][0], key[0]))
                for key in order:
                    self.futures[key] = self.pool.submit(self._one, *key)
            if (suite, scenario) not in self.futures:
                self.futures[(suite, scenario)] = self.pool.submit(self._one, suite, scenario)
            future = self.futures[(suite, scenario)]
        return future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: start only the chains still wanted
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted: set[tuple[str, str]] = set()
    for item in items:
        # a test class may name its own scenario; otherwise the module's
        scenario = (getattr(getattr(item, "cls", None), "SCENARIO", None)
                    or (getattr(item.module, "SCENARIO", None) if hasattr(item, "module") else None))
        callspec = getattr(item, "callspec", None)
        if scenario and callspec is not None and "suite" in callspec.params:
            wanted.add((callspec.params["suite"], scenario))
    config.stash[WANTED] = wanted


WANTED = pytest.StashKey[set]()


@pytest.fixture(scope="session")
def vm_runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    runs = Runs(request.config.stash.get(WANTED, set()))
    yield runs
    runs.close()


@pytest.fixture(params=scenarios.SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return request.param
