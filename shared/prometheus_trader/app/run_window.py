"""The span a run replays: the data window of the store, the bars it replays, and the
run's (start, trade-until, end) milliseconds (``app/pipeline.py`` and the backtest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.market import MINUTE_MS, TIMEFRAME_MS


class DataRangeError(ValueError):
    """The market store has no usable data for the requested run."""


def data_window(
    store: DuckDBMarketStore, settings: Settings, timeframe: str = "1m"
) -> tuple[int, int]:
    """(first, end) ms of the ``timeframe`` data shared by the configured exchange's
    symbols."""
    ranges = [
        r
        for k in store.series_keys()
        if k.exchange == settings.exchange and k.market_type == settings.market_type
        if (r := store.candle_range(k, timeframe)) is not None
    ]
    if not ranges:
        raise DataRangeError(_no_1m_candles(store, settings, timeframe))
    first = max(r[0] for r in ranges)
    last = min(r[1] for r in ranges)
    if last <= first:
        raise DataRangeError(f"the symbols in {store.root} share no common time range")
    return first, last + TIMEFRAME_MS[timeframe]


# the timeframes a run can replay, finest first (a store of only coarser bars cannot run)
REPLAY_TIMEFRAMES = ("1m", "3m", "5m", "15m", "1h")


def replay_timeframe(store: DuckDBMarketStore, settings: Settings) -> str:
    """The bars a run replays: ``settings.bar_timeframe`` if set, else the finest timeframe
    every symbol of the configured market holds, else the finest any of them holds (those
    without it sit the run out). 1m whenever every symbol has 1m candles."""
    if settings.bar_timeframe is not None:
        return settings.bar_timeframe
    keys = [
        k
        for k in store.series_keys()
        if k.exchange == settings.exchange and k.market_type == settings.market_type
    ]
    held = [{tf for tf in REPLAY_TIMEFRAMES if store.candle_range(k, tf) is not None} for k in keys]
    for tf in REPLAY_TIMEFRAMES:
        if held and all(tf in h for h in held):
            return tf
    for tf in REPLAY_TIMEFRAMES:
        if any(tf in h for h in held):
            return tf
    return "1m"  # nothing to replay: ``data_window`` says why


def _no_1m_candles(store: DuckDBMarketStore, settings: Settings, timeframe: str = "1m") -> str:
    """Why a store cannot be replayed, and what to do, in one line."""
    wanted = f"{settings.exchange}/{settings.market_type}"
    keys = store.series_keys()
    if not keys:
        return (
            f"no 1m candles in {store.root} (it holds no data): import recorded data with "
            "`prometheus-trader data import <files or folders> --store <folder>`"
        )
    markets = sorted({f"{k.exchange}/{k.market_type}" for k in keys})
    if wanted not in markets:
        return (
            f"{store.root} holds {', '.join(markets)} data, not {wanted}: set "
            "PROMETHEUS_EXCHANGE / PROMETHEUS_MARKET_TYPE to match it"
        )
    coarse = sorted(
        {tf for k in keys for tf in TIMEFRAME_MS if store.candle_range(k, tf) is not None},
        key=TIMEFRAME_MS.__getitem__,
    )
    if any(tf in REPLAY_TIMEFRAMES for tf in coarse):  # so a forced timeframe is missing
        return (
            f"{store.root} holds {'/'.join(coarse)} candles for {wanted}, not {timeframe}: "
            "unset PROMETHEUS_BAR_TIMEFRAME or set it to one of those"
        )
    return (
        f"{store.root} holds {'/'.join(coarse) or 'no'} candles for {wanted}, none of "
        f"{'/'.join(REPLAY_TIMEFRAMES)}: a run replays one of those (see docs/data.md)"
    )


def replay_window(
    settings: Settings, first_ms: int, data_end_ms: int, what: str = "replay"
) -> tuple[int, int, int]:
    """(start, trade_until, end) ms of a run over data in ``[first_ms, data_end_ms)``:
    signals from the warm-up's end (or ``replay_start``) until ``replay_end`` (default:
    data end − drain); then open positions run to their exits for at most
    ``drain_hours``, on data that exists. ``DataRangeError`` when nothing would trade."""
    start_ms = _floor_minute(
        _ms(settings.replay_start)
        if settings.replay_start
        else first_ms + int(settings.warmup_hours * 3600_000)
    )
    trade_until_ms = (
        _ms(settings.replay_end)
        if settings.replay_end
        else data_end_ms - int(settings.drain_hours * 3600_000)
    )
    end_ms = min(data_end_ms, trade_until_ms + int(settings.drain_hours * 3600_000))
    if trade_until_ms <= start_ms:
        raise DataRangeError(
            f"nothing to {what}: trading would run from {_iso(start_ms)} to "
            f"{_iso(trade_until_ms)} (data {_iso(first_ms)} → {_iso(end_ms)}, warm-up "
            f"{settings.warmup_hours} h, drain {settings.drain_hours} h)"
        )
    return start_ms, trade_until_ms, end_ms


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _floor_minute(ms: int) -> int:
    return ms - ms % MINUTE_MS


def _iso(ms: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)).isoformat()
