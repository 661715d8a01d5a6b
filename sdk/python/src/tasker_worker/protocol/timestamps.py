"""Protocol timestamps (spec §3.7): strict RFC 3339 parsing, nanosecond precision, and the
canonical ``…Z`` form with 0, 3, 6 or 9 fractional digits.

Python's ``datetime`` keeps only microseconds, so :class:`Timestamp` keeps seconds since the Unix
epoch and nanoseconds itself; a timestamp decodes and re-encodes exactly.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

_SHAPE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (any year)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The proleptic Gregorian date ``days`` after 1970-01-01."""
    days += 719468
    era = days // 146097
    day_of_era = days - era * 146097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096
    ) // 365
    year = year_of_era + era * 400
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + (3 if month_index < 10 else -9)
    return year + (month <= 2), month, day


@dataclass(frozen=True, order=True)
class Timestamp:
    """An instant: whole seconds since 1970-01-01T00:00:00Z and nanoseconds (0–999 999 999)."""

    seconds: int
    nanos: int = 0

    @classmethod
    def parse(cls, text: str) -> Timestamp | None:
        """Parses ``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`` (uppercase ``T``/``Z``, year ≥ 1,
        seconds 00–59, a real calendar date, an offset below 24 h); ``None`` otherwise."""
        match = _SHAPE.fullmatch(text)
        if match is None:
            return None
        year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
        fraction, zone = match.group(7), match.group(8)
        if year == 0 or not 1 <= month <= 12:
            return None
        days_in_month = 29 if month == 2 and _is_leap(year) else _DAYS_IN_MONTH[month - 1]
        if not 1 <= day <= days_in_month or hour > 23 or minute > 59 or second > 59:
            return None
        offset_seconds = 0
        if zone != "Z":
            offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
            if offset_hours > 23 or offset_minutes > 59:
                return None
            offset_seconds = (offset_hours * 3600 + offset_minutes * 60) * (
                -1 if zone[0] == "-" else 1
            )
        nanos = int(fraction.ljust(9, "0")) if fraction else 0
        seconds = (
            _days_from_civil(year, month, day) * 86400
            + hour * 3600
            + minute * 60
            + second
            - offset_seconds
        )
        return cls(seconds, nanos)

    @classmethod
    def now(cls) -> Timestamp:
        """Now, to the millisecond (senders SHOULD send millisecond precision)."""
        nanos = time.time_ns()
        return cls(nanos // 1_000_000_000, (nanos % 1_000_000_000) // 1_000_000 * 1_000_000)

    @classmethod
    def from_datetime(cls, moment: datetime) -> Timestamp:
        """The instant of an aware ``datetime`` (a naive one is taken as UTC)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        offset = moment.utcoffset()
        assert offset is not None  # aware by construction
        naive = moment.replace(tzinfo=None)
        seconds = (
            _days_from_civil(naive.year, naive.month, naive.day) * 86400
            + naive.hour * 3600
            + naive.minute * 60
            + naive.second
            - int(offset.total_seconds())
        )
        return cls(seconds, naive.microsecond * 1000)

    def to_datetime(self) -> datetime:
        """This instant as an aware UTC ``datetime`` (nanoseconds cut to microseconds)."""
        return datetime.fromtimestamp(self.seconds, tz=timezone.utc).replace(
            microsecond=self.nanos // 1000
        )

    def format(self) -> str:
        """The canonical wire text: UTC, ``Z``, and the fewest of 0, 3, 6 or 9 fractional
        digits that represent the value (``2025-01-23T19:57:52.100Z``)."""
        days, second_of_day = divmod(self.seconds, 86400)
        year, month, day = _civil_from_days(days)
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        year_text = f"{year:04d}" if 0 <= year <= 9999 else f"{year:+05d}"
        text = f"{year_text}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        if self.nanos == 0:
            fraction = ""
        elif self.nanos % 1_000_000 == 0:
            fraction = f".{self.nanos // 1_000_000:03d}"
        elif self.nanos % 1000 == 0:
            fraction = f".{self.nanos // 1000:06d}"
        else:
            fraction = f".{self.nanos:09d}"
        return f"{text}{fraction}Z"

    def __str__(self) -> str:
        return self.format()
