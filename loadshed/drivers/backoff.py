"""Pauses between tries: a back-off that doubles, and a guard for logins that lock owners out.

Shared by the drivers whose devices take a password (the Powerwall gateway, Kasa's TP-Link
login): a rejected login is tried again soon — devices refuse even a good password for a few
seconds while they reboot, which they do around power events — then less often, and never more
than `max_failures` times in any `window_s`, after which a device locks its owner out.
"""

from __future__ import annotations

import math
from typing import Final

LOGIN_FIRST_S: Final = 8.0  # first pause after a rejected login
LOGIN_MAX_S: Final = 900.0  # doubling up to 15 min: a wrong password needs the owner anyway
LOGIN_FAILURES_MAX: Final = 5  # never more failed logins than this ...
LOGIN_WINDOW_S: Final = 900.0  # ... in any window this long


class Backoff:
    """A pause that doubles after each failure, up to a cap, and starts over after a success."""

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.next_s = first_s
        self.until = -math.inf

    def start(self, now: float) -> float:
        """Begin a pause at now; return how long it lasts."""
        pause_s = self.next_s
        self.until = now + pause_s
        self.next_s = min(pause_s * 2, self.max_s)
        return pause_s

    def extend(self, now: float, pause_s: float) -> float:
        """Make the present pause last at least pause_s from now; return how long it lasts."""
        self.until = max(self.until, now + pause_s)
        return self.until - now

    def is_active(self, now: float) -> bool:
        return now < self.until

    def remaining_s(self, now: float) -> float:
        return max(0.0, self.until - now)

    def succeeded(self, now: float, forget_s: float) -> None:
        """A success: forget the failures once none came for forget_s (not at once: a device
        that rate-limited us must not be hammered again at its first good answer)."""
        if now - self.until >= forget_s:
            self.reset()

    def reset(self) -> None:
        self.next_s = self.first_s
        self.until = -math.inf


class LoginGuard:
    """When the next login may be tried, after rejections."""

    def __init__(
        self,
        first_s: float = LOGIN_FIRST_S,
        max_s: float = LOGIN_MAX_S,
        *,
        max_failures: int = LOGIN_FAILURES_MAX,
        window_s: float = LOGIN_WINDOW_S,
    ) -> None:
        self._backoff = Backoff(first_s, max_s)
        self.max_failures = max_failures
        self.window_s = window_s
        self._failed_at: list[float] = []

    def may_try(self, now: float) -> bool:
        return not self._backoff.is_active(now)

    def wait_s(self, now: float) -> int:
        """Whole seconds until the next login may be tried."""
        return math.ceil(self._backoff.remaining_s(now))

    def rejected(self, now: float) -> float:
        """A login was rejected at now; return the pause before the next one."""
        self._failed_at = [t for t in self._failed_at if now - t < self.window_s]
        self._failed_at.append(now)
        pause_s = self._backoff.start(now)
        if len(self._failed_at) >= self.max_failures:
            # Wait for the oldest of the last max_failures to leave the window.
            oldest = self._failed_at[-self.max_failures]
            pause_s = self._backoff.extend(now, oldest + self.window_s - now)
        return pause_s

    def accepted(self) -> None:
        self._backoff.reset()
