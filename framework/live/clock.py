"""Clocks of the live runtime: the wall clock, and a replay clock that runs a day at N x.

Both give tz-aware America/New_York times and a ``sleep_until``. The replay clock is a
virtual clock: its time moves only through ``sleep_until`` (it waits ``delta / speed`` of
real time, then *is* at the target), so computation never makes it run ahead of the bars
the runtime has processed; ``speed=0`` means "as fast as possible".
"""

from __future__ import annotations

import time

import pandas as pd

from strikebench.calendar import NY

__all__ = ["WallClock", "ReplayClock"]


class WallClock:
    kind = "wall"
    speed = 1.0

    def now(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz=NY)

    def sleep_until(self, t: pd.Timestamp, *, max_wait: float | None = None) -> bool:
        """Sleep until ``t`` (at most ``max_wait`` seconds); True when ``t`` was reached."""
        delta = (pd.Timestamp(t) - self.now()).total_seconds()
        if delta <= 0:
            return True
        wait = delta if max_wait is None else min(delta, max_wait)
        time.sleep(wait)
        return wait >= delta


class ReplayClock:
    kind = "replay"

    def __init__(self, start, speed: float = 60.0):
        ts = pd.Timestamp(start)
        self._now = ts.tz_localize(NY) if ts.tzinfo is None else ts.tz_convert(NY)
        self.speed = float(speed)

    def now(self) -> pd.Timestamp:
        return self._now

    def sleep_until(self, t: pd.Timestamp, *, max_wait: float | None = None) -> bool:
        t = pd.Timestamp(t)
        delta = (t - self._now).total_seconds()
        if delta <= 0:
            return True
        if self.speed > 0:
            wait = delta / self.speed
            if max_wait is not None and wait > max_wait:  # advance part of the way
                time.sleep(max_wait)
                self._now = self._now + pd.Timedelta(seconds=max_wait * self.speed)
                return False
            time.sleep(wait)
        self._now = t
        return True
