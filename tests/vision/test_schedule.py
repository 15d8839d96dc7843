from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from vision.schedule import Schedule, Window

SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    """UTC epoch seconds of a Shanghai wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).timestamp()


# 2024-01-01 was a Monday.
WEEKDAY_LUNCH = Schedule([Window({0, 1, 2, 3, 4}, time(10, 30), time(13, 0))], "Asia/Shanghai")
# After hours, starting Friday and Saturday nights only.
WEEKEND_NIGHTS = Schedule([Window({4, 5}, time(22, 0), time(6, 0))], "Asia/Shanghai")


def test_window_in_site_time_zone_not_utc():
    assert WEEKDAY_LUNCH.is_active(at(2024, 1, 1, 11))
    assert not WEEKDAY_LUNCH.is_active(at(2024, 1, 1, 13))  # end is exclusive
    assert WEEKDAY_LUNCH.is_active(at(2024, 1, 1, 10, 30))  # start is inclusive
    # 11:00 UTC is 19:00 in Shanghai: outside the lunch window.
    assert not WEEKDAY_LUNCH.is_active(datetime(2024, 1, 1, 11, tzinfo=ZoneInfo("UTC")).timestamp())


def test_day_of_week():
    assert WEEKDAY_LUNCH.is_active(at(2024, 1, 5, 12))  # Friday
    assert not WEEKDAY_LUNCH.is_active(at(2024, 1, 6, 12))  # Saturday
    assert not WEEKDAY_LUNCH.is_active(at(2024, 1, 7, 12))  # Sunday


def test_window_across_midnight_belongs_to_its_start_day():
    assert WEEKEND_NIGHTS.is_active(at(2024, 1, 5, 23))  # Friday night
    assert WEEKEND_NIGHTS.is_active(at(2024, 1, 6, 5, 59))  # Saturday early morning, from Friday
    assert WEEKEND_NIGHTS.is_active(at(2024, 1, 7, 3))  # Sunday early morning, from Saturday
    assert not WEEKEND_NIGHTS.is_active(at(2024, 1, 7, 23))  # Sunday night: Sunday is not a start day
    assert not WEEKEND_NIGHTS.is_active(at(2024, 1, 5, 3))  # Friday early morning: Thursday not listed
    assert not WEEKEND_NIGHTS.is_active(at(2024, 1, 6, 6))  # end is exclusive


def test_always_and_whole_day_windows():
    always = Schedule.always()
    assert all(always.is_active(at(2024, 1, d, h)) for d in range(1, 8) for h in (0, 7, 23))
    sundays = Schedule([Window({6}, time(0), time(0))], "Asia/Shanghai")
    assert sundays.is_active(at(2024, 1, 7, 0)) and sundays.is_active(at(2024, 1, 7, 23, 59))
    assert not sundays.is_active(at(2024, 1, 8, 0))


def test_invalid_definitions_are_rejected():
    with pytest.raises(ValueError, match="time zone"):
        Schedule([Window({0}, time(1), time(2))], "Mars/Olympus")
    with pytest.raises(ValueError, match="0 \\(Monday\\) to 6"):
        Window({7}, time(1), time(2))
    with pytest.raises(ValueError, match="at least one day"):
        Window(set(), time(1), time(2))
    with pytest.raises(ValueError, match="at least one window"):
        Schedule([], "UTC")
