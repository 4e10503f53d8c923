"""What the console tests share."""

from __future__ import annotations

import time


async def until(pilot, cond, timeout: float = 20.0, poll: float = 0.05) -> bool:
    """Let the app run until ``cond()`` holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await pilot.pause(poll)
    return False
