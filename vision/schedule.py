"""Weekly time windows in a site's time zone (when a rule applies, when a kitchen is open)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ALL_DAYS = frozenset(range(7))


@dataclass(frozen=True)
class Window:
    """Days 0=Monday..6=Sunday, local start and end times.

    end < start crosses midnight and belongs to its start day (Friday 22:00-06:00 covers Saturday
    morning); end == start covers 24 hours from start.
    """

    days: frozenset[int]
    start: time
    end: time

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        if not self.days:
            raise ValueError("a schedule window needs at least one day")
        if not self.days <= ALL_DAYS:
            raise ValueError(f"window days must be 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")

    def contains(self, local: datetime) -> bool:
        weekday, now = local.weekday(), local.time().replace(tzinfo=None)
        if self.start < self.end:
            return weekday in self.days and self.start <= now < self.end
        # Crosses midnight (or covers a whole day): the part after start is on the start day, the
        # part before end is on the day after.
        return (weekday in self.days and now >= self.start) or ((weekday - 1) % 7 in self.days and now < self.end)


class Schedule:
    def __init__(self, windows: Iterable[Window], tz: str) -> None:
        self.windows = tuple(windows)
        if not self.windows:
            raise ValueError("a schedule needs at least one window (use Schedule.always() for all the time)")
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc

    @classmethod
    def always(cls) -> Schedule:
        return cls([Window(ALL_DAYS, time(0), time(0))], "UTC")

    def is_active(self, ts_utc: float) -> bool:
        local = datetime.fromtimestamp(ts_utc, self.tz)
        return any(window.contains(local) for window in self.windows)

    def __repr__(self) -> str:
        return f"Schedule({list(self.windows)!r}, {self.tz.key!r})"
