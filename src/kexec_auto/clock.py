"""Times as kexec-auto records them.

Local time with its UTC offset, "%Y-%m-%dT%H:%M:%S%z", in the boot state
and its events.

>>> epoch("2026-11-25T12:00:00+0000")
1795608000.0
>>> epoch(now()) is not None
True
"""

from __future__ import annotations

import datetime
import time
from typing import Optional

FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now() -> str:
    return time.strftime(FORMAT)


def epoch(text: Optional[str]) -> Optional[float]:
    """Seconds since the epoch of a time kexec-auto recorded; None when
    there is none or it is unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, FORMAT).timestamp()
    except ValueError:
        return None
