"""``Clock`` adapters: the system clock and a simulated clock for replay and tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def _to_ms(dt: datetime) -> int:
    # integer arithmetic on timedeltas: no float rounding of far-away timestamps
    return (dt - _EPOCH) // _ONE_MS


def _require_aware(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"datetime {dt.isoformat()} must be timezone-aware")
    return dt.astimezone(UTC)


class SystemClock:
    """The real UTC time."""

    def now(self) -> datetime:
        """Current UTC time, timezone-aware."""
        return datetime.now(UTC)

    def now_ms(self) -> int:
        """Current UTC time in epoch milliseconds."""
        return _to_ms(self.now())


class SimulatedClock:
    """A clock that only moves when told to, and never backwards."""

    def __init__(self, start: datetime) -> None:
        self._now = _require_aware(start)

    def __repr__(self) -> str:
        return f"SimulatedClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """The simulated UTC time, timezone-aware."""
        return self._now

    def now_ms(self) -> int:
        """The simulated time in epoch milliseconds (floored)."""
        return _to_ms(self._now)

    def set(self, dt: datetime) -> None:
        """Move to ``dt`` (ValueError if that is earlier than now)."""
        target = _require_aware(dt)
        if target < self._now:
            raise ValueError(
                f"clock cannot move backwards from {self._now.isoformat()} to {target.isoformat()}"
            )
        self._now = target

    def set_ms(self, ms: int) -> None:
        """Move to epoch milliseconds ``ms`` (ValueError if earlier than now)."""
        self.set(_EPOCH + timedelta(milliseconds=ms))

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` (ValueError if negative)."""
        if seconds < 0:
            raise ValueError(f"cannot advance by a negative duration ({seconds}s)")
        self._now = self._now + timedelta(seconds=seconds)
