"""Scheduled macro events (FOMC, CPI, jobs report) and where they land on the session grid.

Dates come from ``configs/events_calendar.csv`` (real release dates) for the
years it covers; for other years a rule places them (FOMC: eight Wednesdays a
year in the usual months; CPI: the Wednesday between the 10th and the 16th;
jobs report: the first Friday). A release before the open moves the opening
gap of the session on or after its date; an intraday one (FOMC 14:00) jumps
inside the session.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from strikebench.calendar import NY

from .scenario import ScenarioError

__all__ = ["ScheduledEvent", "scheduled_events", "read_events_calendar"]

KINDS = ("fomc", "cpi", "nfp")


@dataclass(frozen=True)
class ScheduledEvent:
    """One release: its kind, date and New York time."""

    kind: str
    date: dt.date
    time: dt.time

    @property
    def at_ns(self) -> int:
        """Release moment, UTC epoch nanoseconds."""
        import pandas as pd

        return int(pd.Timestamp(dt.datetime.combine(self.date, self.time), tz=NY).value)


def read_events_calendar(name_or_path: str) -> list[ScheduledEvent]:
    """Parse the events CSV (``date,time_et,event``; '#' lines are comments)."""
    from strikebench.userfiles import MAX_CSV_BYTES, read_text

    path = Path(name_or_path)
    res = resources.files("strikebench.configs") / name_or_path
    if not os.path.lexists(path) and res.is_file():  # a shipped calendar by name
        text, where = res.read_text(encoding="utf-8"), f"configs/{name_or_path}"
    elif not os.path.lexists(path) and os.sep not in str(name_or_path):
        raise ScenarioError(f"events.calendar: '{name_or_path}' is not allowed: no such file in strikebench.configs or on disk")
    else:  # a file the user named: folder, FIFO, unreadable, binary, non-UTF-8 and empty files are one line
        text = read_text(os.fspath(name_or_path), what="events calendar (CSV)", key="events.calendar", error=ScenarioError,
                         max_bytes=MAX_CSV_BYTES)
        where = str(path)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out: list[ScheduledEvent] = []
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    try:
        fields = reader.fieldnames
        rows = list(reader)
    except csv.Error as exc:
        raise ScenarioError(f"{where}: not a readable CSV ({exc})") from None
    if fields is None or not {"date", "time_et", "event"} <= set(fields):
        raise ScenarioError(f"{where}: header must be 'date,time_et,event', got {fields}")
    for i, row in enumerate(rows, start=2):
        try:
            day = dt.date.fromisoformat(row["date"].strip())
            hh, mm = row["time_et"].strip().split(":")
            at = dt.time(int(hh), int(mm))
        except (ValueError, AttributeError):
            raise ScenarioError(f"{where}: row {i}: {row!r} is not allowed: expected YYYY-MM-DD and HH:MM") from None
        kind = row["event"].strip().lower()
        if kind not in KINDS:
            raise ScenarioError(f"{where}: row {i}: event '{kind}' is not allowed: one of {', '.join(KINDS)}")
        out.append(ScheduledEvent(kind, day, at))
    return out


def _first_weekday(year: int, month: int, weekday: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7)


def _rule_events(year: int, times: dict[str, dt.time]) -> list[ScheduledEvent]:
    out = []
    # FOMC: last Wednesday of Jan/Jul, third of Mar/Jun/Sep/Dec, first of May/Nov.
    for month, which in ((1, -1), (3, 3), (5, 1), (6, 3), (7, -1), (9, 3), (11, 1), (12, 2)):
        first = _first_weekday(year, month, 2)
        if which == -1:
            d = first
            while (d + dt.timedelta(days=7)).month == month:
                d += dt.timedelta(days=7)
        else:
            d = first + dt.timedelta(days=7 * (which - 1))
        out.append(ScheduledEvent("fomc", d, times["fomc"]))
    for month in range(1, 13):
        d = dt.date(year, month, 10)
        d += dt.timedelta(days=(2 - d.weekday()) % 7)  # Wednesday in 10..16
        out.append(ScheduledEvent("cpi", d, times["cpi"]))
        out.append(ScheduledEvent("nfp", _first_weekday(year, month, 4), times["nfp"]))
    return out


def scheduled_events(events_spec, start: dt.date, end: dt.date) -> list[ScheduledEvent]:
    """Enabled scheduled events dated in ``[start, end]``, sorted by time."""
    table = read_events_calendar(events_spec.calendar)
    covered = {e.date.year for e in table}
    specs = {k: getattr(events_spec, k) for k in KINDS}
    times = {k: dt.time(*map(int, specs[k].time.split(":"))) for k in KINDS}
    events = [e for e in table if start <= e.date <= end]
    for year in range(start.year, end.year + 1):
        if year not in covered:
            events += [e for e in _rule_events(year, times) if start <= e.date <= end]
    events = [e for e in events if specs[e.kind].enabled]
    return sorted(events, key=lambda e: (e.date, e.time, e.kind))
