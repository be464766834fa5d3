"""Cloud Storage adapters beyond the port contracts: append races, prefixes, partition
sync and two-writer merges, on fake-gcs-server (it enforces generation preconditions)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters.gcp.gcs_blob_store import (
    APPEND_ATTEMPTS,
    AppendConflict,
    GcsBlobStore,
)
from prometheus_trader.adapters.gcp.gcs_market_store import GcsMarketStore
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.domain.market import Candle, MarketType
from prometheus_trader.ports import SeriesKey

pytestmark = pytest.mark.integration

T0 = 1_747_785_600_000  # 2025-05-21T00:00Z
MIN = 60_000
DAY = 86_400_000
BTC = SeriesKey("binance", MarketType.PERP, "BTC/USDT:USDT")


@pytest.fixture
def client(emulators: EmulatorStack) -> storage.Client:
    return storage.Client(project=emulators.project)


@pytest.fixture
def bucket(client: storage.Client) -> str:
    name = f"it-{uuid.uuid4().hex[:20]}"
    GcsBlobStore.ensure_bucket(name, client)
    return name


def bar(ts_ms: int, close: float = 100.0) -> Candle:
    return Candle(
        exchange=BTC.exchange,
        market_type=BTC.market_type,
        symbol=BTC.symbol,
        timeframe="1m",
        ts_ms=ts_ms,
        open=close,
        high=close,
        low=close,
        close=close,
        volume=1.0,
    )


# ------------------------------------------------------------------- blob store
def test_uri_names_bucket_and_prefix_and_prefixes_are_isolated(
    client: storage.Client, bucket: str
) -> None:
    prod = GcsBlobStore(bucket, client=client, prefix="prod/")
    dev = GcsBlobStore(bucket, client=client, prefix="dev")
    assert prod.put("reports/a.html", b"p") == f"gs://{bucket}/prod/reports/a.html"
    dev.put("reports/b.html", b"d")
    assert prod.list() == ["reports/a.html"]
    assert dev.list("reports/") == ["reports/b.html"]
    assert not prod.exists("reports/b.html")
    whole = GcsBlobStore(bucket, client=client)
    assert whole.list() == ["dev/reports/b.html", "prod/reports/a.html"]


def test_ensure_bucket_is_idempotent(client: storage.Client, bucket: str) -> None:
    GcsBlobStore.ensure_bucket(bucket, client)
    assert client.get_bucket(bucket).name == bucket


def test_concurrent_appends_keep_every_line_once(client: storage.Client, bucket: str) -> None:
    # A lost race means another writer's append succeeded in between, so with 3 writers of
    # 4 lines no append can lose more than 8 times: the bounded retry always gets through.
    writer_count, lines_each = 3, 4
    assert (writer_count - 1) * lines_each < APPEND_ATTEMPTS
    writers = [
        GcsBlobStore(bucket, client=client, sleep=lambda _s: None) for _ in range(writer_count)
    ]
    errors: list[BaseException] = []

    def append_many(store: GcsBlobStore, who: int) -> None:
        try:
            for n in range(lines_each):
                store.append_line("audit/log.jsonl", f'{{"w": {who}, "n": {n}}}')
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=append_many, args=(s, i)) for i, s in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = writers[0].get("audit/log.jsonl").decode().splitlines()
    expected = [f'{{"w": {w}, "n": {n}}}' for w in range(writer_count) for n in range(lines_each)]
    assert sorted(lines) == sorted(expected)
    # each writer's own lines stay in the order it appended them
    for w in range(writer_count):
        mine = [line for line in lines if line.startswith(f'{{"w": {w},')]
        assert mine == [f'{{"w": {w}, "n": {n}}}' for n in range(lines_each)]


def _interleave_once(
    monkeypatch: pytest.MonkeyPatch, before_write: Callable[[], None], times: int = 1
) -> list[int]:
    """Run ``before_write`` just before the next ``times`` conditional uploads."""
    original = storage.Blob.upload_from_string
    calls: list[int] = []

    def racing_upload(self: storage.Blob, data: Any, *args: Any, **kwargs: Any) -> None:
        if "if_generation_match" in kwargs and len(calls) < times:
            calls.append(kwargs["if_generation_match"])
            monkeypatch.setattr(storage.Blob, "upload_from_string", original)
            before_write()  # a competing writer gets in between our read and our write
            monkeypatch.setattr(storage.Blob, "upload_from_string", racing_upload)
        original(self, data, *args, **kwargs)

    monkeypatch.setattr(storage.Blob, "upload_from_string", racing_upload)
    return calls


def test_append_retries_after_losing_the_generation_race(
    client: storage.Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    ours = GcsBlobStore(bucket, client=client, sleep=pauses.append)
    theirs = GcsBlobStore(bucket, client=client)
    ours.append_line("log.txt", "first")
    calls = _interleave_once(monkeypatch, lambda: theirs.append_line("log.txt", "theirs"))
    ours.append_line("log.txt", "ours")
    assert len(calls) == 1 and len(pauses) == 1  # one lost race, one retry
    assert ours.get("log.txt") == b"first\ntheirs\nours\n"


def test_append_gives_up_after_bounded_attempts(
    client: storage.Client, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = GcsBlobStore(bucket, client=client, sleep=lambda _s: None)
    theirs = GcsBlobStore(bucket, client=client)
    ours.append_line("log.txt", "first")
    _interleave_once(monkeypatch, lambda: theirs.append_line("log.txt", "x"), APPEND_ATTEMPTS)
    with pytest.raises(AppendConflict):
        ours.append_line("log.txt", "ours")
    assert ours.get("log.txt").decode().splitlines() == ["first"] + ["x"] * APPEND_ATTEMPTS


# ----------------------------------------------------------------- market store
def _objects(client: storage.Client, bucket: str) -> dict[str, int]:
    return {b.name: int(b.generation) for b in client.list_blobs(bucket)}


def test_flush_uploads_only_rewritten_partitions(
    client: storage.Client, bucket: str, tmp_path: Path
) -> None:
    store = GcsMarketStore(bucket, tmp_path / "a", client=client)
    store.write_candles([bar(T0), bar(T0 + DAY)])
    store.flush()
    before = _objects(client, bucket)
    assert sorted(before) == [
        "market/binance/perp/candles_1m/date=2025-05-21/data.parquet",
        "market/binance/perp/candles_1m/date=2025-05-22/data.parquet",
    ]
    store.write_candles([bar(T0 + DAY + MIN)])
    store.flush()
    after = _objects(client, bucket)
    day1, day2 = sorted(before)
    assert after[day1] == before[day1]  # untouched partition: not uploaded again
    assert after[day2] != before[day2]
    store.flush()  # nothing dirty: no upload
    assert _objects(client, bucket) == after


def test_two_writers_on_one_partition_merge_instead_of_overwriting(
    client: storage.Client, bucket: str, tmp_path: Path
) -> None:
    first = GcsMarketStore(bucket, tmp_path / "first", client=client)
    second = GcsMarketStore(bucket, tmp_path / "second", client=client)
    first.write_candles([bar(T0, 1.0)])
    second.write_candles([bar(T0 + MIN, 2.0)])
    first.flush()
    second.flush()  # 412: merges first's rows, then uploads
    assert second.candles(BTC, "1m", T0, T0 + 2 * MIN).close.tolist() == [1.0, 2.0]
    fresh = GcsMarketStore(bucket, tmp_path / "fresh", client=client)
    assert fresh.candles(BTC, "1m", T0, T0 + 2 * MIN).close.tolist() == [1.0, 2.0]
    first.write_candles([bar(T0 + 2 * MIN, 3.0)])
    first.flush()  # first is now behind second's upload: merges again
    again = GcsMarketStore(bucket, tmp_path / "again", client=client)
    assert again.candles(BTC, "1m", T0, T0 + 3 * MIN).close.tolist() == [1.0, 2.0, 3.0]


def test_reopen_reuses_matching_cache_and_drops_orphans(
    client: storage.Client, bucket: str, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    with GcsMarketStore(bucket, cache, client=client, prefix="m") as store:
        store.write_candles([bar(T0)])
    cached = cache / "binance/perp/candles_1m/date=2025-05-21/data.parquet"
    stamp = cached.stat().st_mtime_ns
    orphan = cache / "binance/perp/candles_1m/date=2025-05-22/data.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(cached.read_bytes())  # a partition the bucket does not have
    reopened = GcsMarketStore(bucket, cache, client=client, prefix="m")
    assert cached.stat().st_mtime_ns == stamp  # same MD5: not downloaded again
    assert not orphan.exists()
    assert reopened.candle_range(BTC, "1m") == (T0, T0)


def test_read_only_store_refuses_writes(
    client: storage.Client, bucket: str, tmp_path: Path
) -> None:
    with GcsMarketStore(bucket, tmp_path / "w", client=client) as store:
        store.write_candles([bar(T0)])
    reader = GcsMarketStore(bucket, tmp_path / "r", client=client, read_only=True)
    assert reader.last_candle_ms(BTC, "1m") == T0
    with pytest.raises(PermissionError):
        reader.write_candles([bar(T0 + MIN)])
    reader.flush()
    assert len(_objects(client, bucket)) == 1


def test_object_names_that_leave_the_cache_are_refused(
    client: storage.Client, bucket: str, tmp_path: Path
) -> None:
    # fake-gcs-server normalises "a/../b" on upload (real GCS keeps it), so the name
    # check is driven directly.
    store = GcsMarketStore(bucket, tmp_path / "c", client=client)
    for name in ["market/../escape.parquet", "market//x.parquet", "market/./x", "market/"]:
        with pytest.raises(ValueError):
            store._relative(name)
    assert str(store._relative("market/a/b.parquet")) == "a/b.parquet"
