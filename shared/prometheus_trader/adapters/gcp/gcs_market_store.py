"""Cloud Storage ``MarketStore``: DuckDB over a local cache of the bucket's Parquet.

The bucket holds the embedded store's layout under ``prefix``
(``<prefix>/<exchange>/<market_type>/<kind>/date=YYYY-MM-DD/data.parquet``). Opening
downloads every object under the prefix into ``cache_dir`` (skipping files whose MD5
already matches) and opens a ``DuckDBMarketStore`` there; every port method delegates to
it. ``flush()`` writes the dirty partitions locally, then uploads exactly those files.

Uploads carry a generation precondition (the generation we last saw, 0 for a new object),
so two writers never silently overwrite each other: the loser merges the winner's rows
(writes are idempotent unions) and uploads again.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters import ClosesOnExit
from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.embedded.local_blob_store import validate_key
from prometheus_trader.adapters.embedded.market_tables import TABLES, TableName
from prometheus_trader.domain.market import (
    Candle,
    CandleSeries,
    FundingRate,
    OpenInterest,
    Ticker,
    Trade,
)
from prometheus_trader.ports import SeriesKey

# A partition upload that loses this many generation races in a row is an outage, not
# contention (writers are the collector and the odd backfill job).
UPLOAD_ATTEMPTS = 5
_PARQUET_TYPE = "application/vnd.apache.parquet"


class MarketSyncError(RuntimeError):
    """The local cache could not be synchronised with the bucket."""


def _md5_b64(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii")


def _table_of(relative: PurePosixPath) -> TableName:
    """The store table a partition file belongs to (``candles_1m`` → ``candles``)."""
    kind = relative.parts[2]
    if kind in TABLES:
        return kind
    base = kind.split("_", 1)[0]
    if base in TABLES and TABLES[base].per_timeframe:
        return base
    raise MarketSyncError(f"unexpected partition path {relative}")


class GcsMarketStore(ClosesOnExit):
    """``MarketStore`` kept as partitioned Parquet in a Cloud Storage bucket."""

    def __init__(
        self,
        bucket: str,
        cache_dir: Path,
        *,
        client: storage.Client | None = None,
        prefix: str = "market",
        read_only: bool = False,
    ) -> None:
        self._client = client if client is not None else storage.Client()
        self._bucket_name = bucket
        self._bucket = self._client.bucket(bucket)
        self._prefix = prefix.strip("/")
        if self._prefix:
            validate_key(self._prefix)
        self._cache_dir = Path(cache_dir)
        self._read_only = read_only
        self._lock = threading.RLock()
        # generation of each cached object as last seen in the bucket (upload precondition)
        self._generations: dict[PurePosixPath, int] = {}
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        self._download_all()
        self._local = DuckDBMarketStore(self._cache_dir, read_only=read_only)

    def __repr__(self) -> str:
        return (
            f"GcsMarketStore('gs://{self._bucket_name}/{self._prefix}', {str(self._cache_dir)!r})"
        )

    # ------------------------------------------------------------------ sync
    def _object_name(self, relative: PurePosixPath) -> str:
        return f"{self._prefix}/{relative}" if self._prefix else str(relative)

    def _relative(self, object_name: str) -> PurePosixPath:
        """The cache path of an object, refusing names that would leave ``cache_dir``."""
        rel = object_name[len(self._prefix) + 1 :] if self._prefix else object_name
        return PurePosixPath(*validate_key(rel))

    def _download_all(self) -> None:
        """Make ``cache_dir`` mirror the bucket: fetch new or changed partitions, and drop
        cached partitions the bucket does not have (the bucket is the source of truth)."""
        listing_prefix = f"{self._prefix}/" if self._prefix else ""
        for blob in self._client.list_blobs(self._bucket_name, prefix=listing_prefix):
            relative = self._relative(blob.name)
            target = self._cache_dir / relative
            generation = int(blob.generation)
            if not (target.is_file() and blob.md5_hash and _md5_b64(target) == blob.md5_hash):
                # the object may have changed since the listing: keep what we really read
                generation = self._download(blob.name, target, None)
            self._generations[relative] = generation
        for cached in sorted(self._cache_dir.glob("*/*/*/date=*/data.parquet")):
            if (
                PurePosixPath(cached.relative_to(self._cache_dir).as_posix())
                not in self._generations
            ):
                cached.unlink()

    def _download(self, name: str, target: Path, if_generation_match: int | None) -> int:
        """Download ``name`` to ``target`` atomically; returns the generation read."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".dl.", suffix=".tmp")
        os.close(fd)
        blob = self._bucket.blob(name)
        try:
            blob.download_to_filename(tmp_name, if_generation_match=if_generation_match)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        return int(blob.generation)

    def _upload(self, relative: PurePosixPath) -> list[PurePosixPath]:
        """Upload one partition file; returns other files a merge rewrote on the way."""
        name = self._object_name(relative)
        also_written: list[PurePosixPath] = []
        for _attempt in range(UPLOAD_ATTEMPTS):
            blob = self._bucket.blob(name)
            try:
                blob.upload_from_filename(
                    str(self._cache_dir / relative),
                    content_type=_PARQUET_TYPE,
                    if_generation_match=self._generations.get(relative, 0),
                )
            except gexc.PreconditionFailed:
                also_written += [p for p in self._merge_remote(relative) if p != relative]
                continue
            self._generations[relative] = int(blob.generation)
            return also_written
        raise MarketSyncError(
            f"gs://{self._bucket_name}/{name} kept changing under us ({UPLOAD_ATTEMPTS} tries)"
        )

    def _merge_remote(self, relative: PurePosixPath) -> list[PurePosixPath]:
        """Another writer replaced the partition: take its rows too and rewrite ours.
        Returns the files the local flush rewrote."""
        with tempfile.TemporaryDirectory(dir=self._cache_dir) as tmp:
            remote_copy = Path(tmp) / "remote.parquet"
            generation = self._download(self._object_name(relative), remote_copy, None)
            self._local.write_arrow(_table_of(relative), pq.read_table(remote_copy))
        self._generations[relative] = generation
        return [PurePosixPath(p.as_posix()) for p in self._local.flush_partitions()]

    def flush(self) -> None:
        """Write the dirty partitions locally, then upload exactly those files."""
        with self._lock:
            written = self._local.flush_partitions()
            if self._read_only:
                return
            pending = [PurePosixPath(p.as_posix()) for p in written]
            while pending:
                relative = pending.pop(0)
                for extra in self._upload(relative):
                    if extra not in pending:
                        pending.append(extra)

    def close(self) -> None:
        """Flush (and upload) pending writes, then release DuckDB."""
        with self._lock:
            self.flush()
            self._local.close()

    @property
    def local_store(self) -> DuckDBMarketStore:
        """The DuckDB store over the cache (extras such as mark candles; flush through
        this wrapper, or the bucket misses the writes)."""
        return self._local

    @property
    def cache_dir(self) -> Path:
        """Folder holding the local copy of the bucket's partitions."""
        return self._cache_dir

    # ---------------------------------------------------------------- writes
    def write_candles(self, candles: Sequence[Candle]) -> int:
        """Store candles; returns how many were new."""
        return self._local.write_candles(candles)

    def write_trades(self, trades: Sequence[Trade]) -> int:
        """Store trades; returns how many were new."""
        return self._local.write_trades(trades)

    def write_funding(self, rates: Sequence[FundingRate]) -> int:
        """Store funding rates; returns how many were new."""
        return self._local.write_funding(rates)

    def write_open_interest(self, points: Sequence[OpenInterest]) -> int:
        """Store open interest points; returns how many were new."""
        return self._local.write_open_interest(points)

    def write_tickers(self, tickers: Sequence[Ticker]) -> int:
        """Store ticker snapshots; returns how many were new."""
        return self._local.write_tickers(tickers)

    # ----------------------------------------------------------------- reads
    def series_keys(self) -> list[SeriesKey]:
        """Every instrument with stored candles, sorted."""
        return self._local.series_keys()

    def candles(self, key: SeriesKey, timeframe: str, start_ms: int, end_ms: int) -> CandleSeries:
        """Candles with ``start_ms <= ts_ms`` and close time ``<= end_ms``, oldest first."""
        return self._local.candles(key, timeframe, start_ms, end_ms)

    def candles_many(
        self, keys: Sequence[SeriesKey], timeframe: str, start_ms: int, end_ms: int
    ) -> dict[SeriesKey, CandleSeries]:
        """``candles`` for several instruments in one query."""
        return self._local.candles_many(keys, timeframe, start_ms, end_ms)

    def last_candle_ms(self, key: SeriesKey, timeframe: str) -> int | None:
        """Open time of the newest stored candle, None if none."""
        return self._local.last_candle_ms(key, timeframe)

    def candle_range(self, key: SeriesKey, timeframe: str) -> tuple[int, int] | None:
        """(first, last) candle open times stored, None if none."""
        return self._local.candle_range(key, timeframe)

    def trades(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[Trade]:
        """Trades with ``start_ms <= ts_ms <= end_ms``, ordered by (ts_ms, trade_id)."""
        return self._local.trades(key, start_ms, end_ms)

    def funding(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[FundingRate]:
        """Funding rates in [start_ms, end_ms]."""
        return self._local.funding(key, start_ms, end_ms)

    def open_interest(self, key: SeriesKey, start_ms: int, end_ms: int) -> list[OpenInterest]:
        """Open interest points in [start_ms, end_ms]."""
        return self._local.open_interest(key, start_ms, end_ms)

    def funding_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[FundingRate]]:
        """``funding`` for several instruments in one query."""
        return self._local.funding_many(keys, start_ms, end_ms)

    def open_interest_many(
        self, keys: Sequence[SeriesKey], start_ms: int, end_ms: int
    ) -> dict[SeriesKey, list[OpenInterest]]:
        """``open_interest`` for several instruments in one query."""
        return self._local.open_interest_many(keys, start_ms, end_ms)

    def latest_tickers(self, exchange: str, as_of_ms: int) -> list[Ticker]:
        """The newest ticker per symbol with ``ts_ms <= as_of_ms``."""
        return self._local.latest_tickers(exchange, as_of_ms)


__all__ = ["UPLOAD_ATTEMPTS", "GcsMarketStore", "MarketSyncError"]
