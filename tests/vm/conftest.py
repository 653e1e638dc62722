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
import time
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


Result = tuple[scenarios.Built, guest.Chain]


def _timed(suite: str, name: str, build: Callable[[], scenarios.Built]) -> Result:
    """Build a chain's disk and boot its chain; how long each took goes to
    test-artifacts/chains.txt, where a session's VM time can be read."""
    start = time.monotonic()
    built = build()
    booted = time.monotonic()
    chain = scenarios.boot_chain(built, **built.chain_options)
    end = time.monotonic()
    scenarios.ARTIFACTS.mkdir(exist_ok=True)
    with open(scenarios.ARTIFACTS / "chains.txt", "a", encoding="utf-8") as out:
        out.write(f"{suite} {name}: built in {booted - start:.0f} s, {len(chain.boots)} boots "
                  f"in {end - booted:.0f} s{'' if chain.ended else ' (did not end)'}\n")
    return built, chain


class Runs:
    """The session's VM chains, run in order (longest first) by lanes: one
    lane from start(), a second from the first VM test's request on."""
    LANES = 2

    def __init__(self, wanted: set[tuple[str, str]], safety_plans: set[tuple[str, safety.Plan]] = frozenset()):
        self.wanted = wanted
        self.safety_plans = set(safety_plans)
        self.lock = threading.Lock()
        self.started = False
        self.futures: dict[tuple[str, str], concurrent.futures.Future[Result]] = {}
        self.queue: list[tuple[Callable[..., Result], tuple[object, ...], concurrent.futures.Future[Result]]] = []
        self.lanes: list[threading.Thread] = []
        self.wide = False
        self.closing = False

    def _one(self, suite: str, scenario: str) -> Result:
        return _timed(suite, scenario, lambda: BUILDERS[scenario][1](suite))

    @staticmethod
    def _safety(suite: str, plan: safety.Plan) -> Result:
        return _timed(suite, plan.name, lambda: safety.build(suite, plan))

    def _lane(self) -> None:
        while True:
            with self.lock:
                if self.closing or not self.queue:
                    self.lanes.remove(threading.current_thread())
                    return
                function, args, future = self.queue.pop(0)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function(*args))
            except BaseException as exc:  # the test that reads it reports it
                future.set_exception(exc)

    def _staff(self) -> None:
        """Enough lanes for the queue (under self.lock)."""
        while self.queue and len(self.lanes) < (self.LANES if self.wide else 1):
            lane = threading.Thread(target=self._lane, name=f"vm-lane-{len(self.lanes)}", daemon=True)
            self.lanes.append(lane)
            lane.start()

    def _submit(self, key: tuple[str, str], function: Callable[..., Result], *args: object) -> None:
        future: concurrent.futures.Future[Result] = concurrent.futures.Future()
        self.futures[key] = future
        self.queue.append((function, args, future))

    def _start_all(self) -> None:
        """Every chain the session needs, longest first."""
        self.started = True
        jobs = [(BUILDERS[scenario][0], (suite, scenario), self._one, (suite, scenario))
                for suite, scenario in self.wanted]
        jobs += [(plan.weight, (suite, plan.name), self._safety, (suite, plan))
                 for suite, plan in self.safety_plans]
        for _, key, function, args in sorted(jobs, key=lambda job: (-job[0], job[1])):
            self._submit(key, function, *args)

    def start(self) -> None:
        """Start the chains now, one at a time until a VM test asks for one."""
        with self.lock:
            if not self.started:
                self._start_all()
            self._staff()

    def _result(self, key: tuple[str, str], function: Callable[..., Result], *args: object) -> Result:
        with self.lock:
            self.wide = True
            if not self.started:
                self._start_all()
            if key not in self.futures:
                self._submit(key, function, *args)
            self._staff()
            future = self.futures[key]
        return future.result()

    def get(self, suite: str, scenario: str) -> Result:
        if not self.started:
            self.wanted.add((suite, scenario))
        return self._result((suite, scenario), self._one, suite, scenario)

    def get_safety(self, suite: str, plan: safety.Plan) -> Result:
        """A chain of the safety net's scenarios (tests/vm/safety.py)."""
        if not self.started:
            self.safety_plans.add((suite, plan))
        return self._result((suite, plan.name), self._safety, suite, plan)

    def get_job(self, name: str, function: Callable[[], object]) -> object:
        """function's result, run once in a lane of the VM chains, so that
        a test that drives its own VM never adds a third one."""
        return self._result(("job", name), function)  # type: ignore[arg-type]

    def close(self) -> None:
        """Wait for the chains booting now; the queued ones never start."""
        with self.lock:
            self.closing = True
            for _, _, future in self.queue:
                future.cancel()
            self.queue.clear()
            lanes = list(self.lanes)
        for lane in lanes:
            lane.join()


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
