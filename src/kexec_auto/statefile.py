"""The boot state as JSON: writing it, reading it, and salvaging a damaged one.

Marks are written before events, so a file cut short (a crash while
writing, on a file system without data journaling) loses its history of
events before any mark.  :func:`salvage` reads what can still be read of a
damaged file, value by value, and says what it could not read.

>>> state = BootState(marks={"6.1.0-56-amd64": Mark("bad", "2026-11-25T12:00:00+0000", "panic", 2)},
...                   events=("2026-11-25T12:00:00+0000 6.1.0-56-amd64 failed to boot",))
>>> text = dump_state(state)
>>> parse_state(text) == state
True
>>> saved, lost = salvage(text[:text.index('"events"') + 15])
>>> saved.marks == state.marks, lost
(True, 'events after the first 0')
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .assess import BAD, FAILED, GOOD, BootState, Mark

_FIELDS = ("trying", "trying_since", "trying_reached", "trying_failed", "damage", "marks", "events")


def dump_state(state: BootState) -> str:
    return json.dumps(
        {
            "trying": state.trying,
            "trying_since": state.trying_since,
            "trying_reached": state.trying_reached,
            "trying_failed": state.trying_failed,
            "damage": list(state.damage),
            "marks": {r: dataclasses.asdict(m) for r, m in sorted(state.marks.items())},
            "events": list(state.events),
        },
        indent=1,
    ) + "\n"


def _mark(value: Any) -> Mark:
    state = str(value["state"])
    failures = value.get("failures", 1 if state == BAD else 0)
    if not isinstance(failures, int) or isinstance(failures, bool) or failures < 0:
        raise ValueError("failures is not a count")
    if state not in (GOOD, BAD, FAILED):
        raise ValueError("unknown mark")
    return Mark(state, str(value["when"]), str(value.get("why", "")), failures)


def _state(data: dict[str, Any], marks: dict[str, Mark]) -> BootState:
    trying = data.get("trying")
    if trying is not None and not isinstance(trying, str):
        raise ValueError("trying is not a release")
    return BootState(
        trying, str(data.get("trying_since", "")), marks, tuple(map(str, data.get("events", []))),
        str(data.get("trying_reached", "")), str(data.get("trying_failed", "")),
        tuple(map(str, data.get("damage", []))),
    )


def parse_state(text: str) -> BootState:
    """The state stored in ``text``; ValueError when it is not a valid state.
    Files written before tries were counted (no "failures") read as one
    failure per bad mark."""
    try:
        data = json.loads(text)
        return _state(data, {str(release): _mark(m) for release, m in data["marks"].items()})
    except RecursionError:
        raise ValueError("not a kexec-auto boot state (nested too deep)") from None
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"not a kexec-auto boot state ({error.__class__.__name__}: {error})") from None


class _Reader:
    """JSON read value by value from the start, until it breaks (ValueError)."""

    def __init__(self, text: str):
        self.text, self.at, self.decoder = text, 0, json.JSONDecoder()

    def _blank(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\r\n":
            self.at += 1

    def peek(self) -> str:
        self._blank()
        return self.text[self.at:self.at + 1]

    def expect(self, *tokens: str) -> str:
        token = self.peek()
        if not token or token not in tokens:
            raise ValueError(f"expected one of {tokens!r} at {self.at}")
        self.at += 1
        return token

    def value(self) -> Any:
        self._blank()
        value, self.at = self.decoder.raw_decode(self.text, self.at)
        return value

    def items(self, close: str, item: Any) -> None:
        """Call ``item()`` for each item of the object or array being read."""
        if self.peek() == close:
            self.at += 1
            return
        while True:
            item()
            if self.expect(",", close) == close:
                return


def salvage(text: str) -> tuple[BootState, str]:
    """What can be read of a damaged state ``text``, and what could not
    ('' when nothing was lost)."""
    reader = _Reader(text)
    data: dict[str, Any] = {}
    marks: dict[str, Mark] = {}
    events: list[str] = []
    read: set[str] = set()

    def mark() -> None:
        release = str(reader.value())
        reader.expect(":")
        marks[release] = _mark(reader.value())

    def field() -> None:
        key = str(reader.value())
        reader.expect(":")
        if key == "marks":
            reader.expect("{")
            reader.items("}", mark)
        elif key == "events":
            reader.expect("[")
            reader.items("]", lambda: events.append(str(reader.value())))
        else:
            data[key] = reader.value()
        read.add(key)

    try:
        reader.expect("{")
        reader.items("}", field)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    lost = []
    if "trying" not in read:
        lost.append("whether a trial was under way")
    if "marks" not in read:
        lost.append(f"the marks after the first {len(marks)}" if marks else "every mark")
    if "events" not in read:
        lost.append(f"events after the first {len(events)}")
    data["events"] = events
    try:
        state = _state(data, marks)
    except (ValueError, TypeError):
        state = _state({"events": events}, marks)
    return state, "; ".join(lost)
