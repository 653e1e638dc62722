"""Fixtures of the VM suite: every needed (suite, scenario) VM chain runs once.

Once collection is done, the chains the collected tests need start,
longest first: one at a time while the session's other tests run (they
keep about one core busy), two at a time (one qemu per core, -smp 1, TCG)
from the first VM test on.  Tests then only read the recorded boots and
assert.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, Iterator

import pytest

from . import bootpaths, guest, safety, scenarios, unattended

# longest chains first: they decide how long the session takes
BUILDERS: dict[str, tuple[int, Callable[[str], scenarios.Built]]] = {
    "main": (3, scenarios.build_main),
    "smoke": (1, scenarios.build_smoke),
    **bootpaths.builders(),  # type: ignore[dict-item]
    "unattended": (5, unattended.build_unattended),
}


class Runs:
    def __init__(self, wanted: set[tuple[str, str]], safety_plans: set[tuple[str, safety.Plan]] = frozenset()):
        self.wanted = wanted
        self.safety_plans = set(safety_plans)
        self.lock = threading.Lock()
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.futures: dict[tuple[str, str], concurrent.futures.Future[tuple[scenarios.Built, guest.Chain]]] = {}
        #: chains booting at once: one until the first VM test asks, then two
        self.lanes = threading.Semaphore(1)
        self.widened = False
        self.closing = False

    def _in_lane(self, function: Callable[..., tuple[scenarios.Built, guest.Chain]], *args: object
                 ) -> tuple[scenarios.Built, guest.Chain]:
        with self.lanes:
            if self.closing:
                raise RuntimeError("the test session ended before this chain started")
            return function(*args)

    def start(self) -> None:
        """Start the chains now, one at a time until a VM test asks for one."""
        with self.lock:
            if self.pool is None:
                self._start_all()

    def _widen(self) -> None:
        if not self.widened:
            self.widened = True
            self.lanes.release()

    def _one(self, suite: str, scenario: str) -> tuple[scenarios.Built, guest.Chain]:
        built = BUILDERS[scenario][1](suite)
        return built, scenarios.boot_chain(built, **built.chain_options)

    @staticmethod
    def _safety(suite: str, plan: safety.Plan) -> tuple[scenarios.Built, guest.Chain]:
        built = safety.build(suite, plan)
        return built, scenarios.boot_chain(built, **built.chain_options)

    def _start_all(self) -> None:
        """Every chain the session needs, longest first, two at a time."""
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        jobs = [(BUILDERS[scenario][0], (suite, scenario), self._one, (suite, scenario))
                for suite, scenario in self.wanted]
        jobs += [(plan.weight, (suite, plan.name), self._safety, (suite, plan))
                 for suite, plan in self.safety_plans]
        for _, key, function, args in sorted(jobs, key=lambda job: (-job[0], job[1])):
            self.futures[key] = self.pool.submit(self._in_lane, function, *args)

    def get(self, suite: str, scenario: str) -> tuple[scenarios.Built, guest.Chain]:
        with self.lock:
            self._widen()
            if self.pool is None:
                self.wanted.add((suite, scenario))
                self._start_all()
            if (suite, scenario) not in self.futures:
                self.futures[(suite, scenario)] = self.pool.submit(self._one, suite, scenario)
            future = self.futures[(suite, scenario)]
        return future.result()

    def get_safety(self, suite: str, plan: safety.Plan) -> tuple[scenarios.Built, guest.Chain]:
        """A chain of the safety net's scenarios (tests/vm/safety.py)."""
        with self.lock:
            self._widen()
            if self.pool is None:
                self.safety_plans.add((suite, plan))
                self._start_all()
            key = (suite, plan.name)
            if key not in self.futures:
                self.futures[key] = self.pool.submit(self._safety, suite, plan)
            future = self.futures[key]
        return future.result()

    def close(self) -> None:
        """Wait for the chain booting now; the others never start."""
        self.closing = True
        with self.lock:
            self._widen()  # a chain waiting for its lane gives up at once
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: start only the chains still wanted
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted: set[tuple[str, str]] = set()
    plans: set[tuple[str, safety.Plan]] = set()
    for item in items:
        if item.get_closest_marker("skip"):  # in the full matrix only
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and isinstance(callspec.params.get("plan"), safety.Plan):
            plans.add((callspec.params["suite"], callspec.params["plan"]))
            continue
        # a test class may name its own scenario; otherwise the module's
        scenario = (getattr(getattr(item, "cls", None), "SCENARIO", None)
                    or (getattr(item.module, "SCENARIO", None) if hasattr(item, "module") else None))
        callspec = getattr(item, "callspec", None)
        if scenario and callspec is not None and "suite" in callspec.params:
            wanted.add((callspec.params["suite"], scenario))
        if callspec is not None and "bootpath" in callspec.params:  # (suite, layout)
            path_suite, layout = callspec.params["bootpath"]
            wanted.add((path_suite, f"path-{layout}"))
    config.stash[WANTED] = wanted
    config.stash[SAFETY_PLANS] = plans
    if (wanted or plans) and not config.option.collectonly:
        runs = Runs(set(wanted), set(plans))
        config.stash[RUNS] = runs
        runs.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    runs = config.stash.get(RUNS, None)
    if runs is not None:
        runs.close()


WANTED = pytest.StashKey[set]()
SAFETY_PLANS = pytest.StashKey[set]()
RUNS = pytest.StashKey[Runs]()


@pytest.fixture(scope="session")
def vm_runs(request: pytest.FixtureRequest) -> Iterator[Runs]:
    runs = request.config.stash.get(RUNS, None)
    if runs is None:
        runs = Runs(request.config.stash.get(WANTED, set()), request.config.stash.get(SAFETY_PLANS, set()))
        request.config.stash[RUNS] = runs
    yield runs


@pytest.fixture(params=bootpaths.matrix())
def bootpath(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(suite, layout) of a boot path: CI's matrix, or every one with
    KEXEC_AUTO_TEST_MATRIX=full."""
    return request.param


@pytest.fixture(params=scenarios.SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return request.param
