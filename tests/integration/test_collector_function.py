"""The collector Cloud Function with ``PROMETHEUS_COLLECTOR_EXCHANGE`` set: functions-framework
over the emulators (Firestore gap documents, the market store in Cloud Storage) and the
Binance stand-in through real ccxt. Two invocations: the second, over the bucket as the
first left it, writes no row; a range the venue never serves ends up unfillable."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import functions_framework
import pytest
from google.cloud import storage  # type: ignore[attr-defined]
from tests.standins.binance_usdm import Stand, serve_binance
from tests.standins.engine import Engine
from tests.support import REPO

from prometheus_trader.adapters.gcp.firestore_state_store import FirestoreStateStore
from prometheus_trader.app import cloud
from prometheus_trader.app.emulators import EmulatorStack
from prometheus_trader.domain.market import MINUTE_MS
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


@pytest.fixture
def stand() -> Iterator[Stand]:
    with serve_binance(Engine(keys={})) as s:
        yield s


def test_collector_function_on_a_live_venue(
    emulators: EmulatorStack, stand: Stand, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = stand.engine
    end = engine.now_ms - engine.now_ms % MINUTE_MS
    lost = (end - 40 * MINUTE_MS, end - 35 * MINUTE_MS)
    engine.dropped_bars[BTC] = [lost]
    prefix = f"c{uuid.uuid4().hex[:10]}"
    bucket = f"fn-{prefix}"
    storage.Client(project=emulators.project).create_bucket(bucket)
    # the venue's clock is 06:00:30; ours starts at 06:00:01 so both invocations see 06:00
    start = datetime.fromtimestamp((engine.now_ms - 29_000) / 1000, UTC)
    env = {
        "PROMETHEUS_BACKEND": "gcp",
        "PROMETHEUS_GCP_PROJECT": emulators.project,
        "PROMETHEUS_STATE_PREFIX": f"{prefix}_",
        "PROMETHEUS_TOPIC_PREFIX": f"{prefix}-",
        "PROMETHEUS_BLOB_BUCKET": bucket,
        "PROMETHEUS_MARKET_CACHE_DIR": str(tmp_path / "cache"),
        "PROMETHEUS_CLOCK_START": start.isoformat(),
        "PROMETHEUS_COLLECTOR_EXCHANGE": "binance",
        "PROMETHEUS_COLLECTOR_SYMBOLS": json.dumps([BTC, ETH]),
        "PROMETHEUS_COLLECTOR_URLS": json.dumps(stand.urls),
        "PROMETHEUS_COLLECTOR_BACKFILL_MINUTES": "90",
        "PROMETHEUS_COLLECTOR_RATE_LIMIT_MS": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cloud.reset_runtime()
    state = FirestoreStateStore(project=emulators.project, prefix=f"{prefix}_")
    try:
        main = REPO / "functions" / "collector" / "main.py"
        client = functions_framework.create_app("collector", str(main)).test_client()
        first = client.post("/")
        assert first.status_code == 200, first.get_data(as_text=True)
        report = first.get_json()["report"]
        assert report["candles"] == 2 * 90 - 5 and report["failed"] == {}
        assert report["gaps_found"] == 1 and report["derived"] > 0
        second = client.post("/")
        assert second.status_code == 200
        again = second.get_json()["report"]
        rows = ("tickers", "candles", "derived", "funding", "open_interest", "trades")
        assert {k: again[k] for k in rows} == dict.fromkeys(rows, 0)
        assert again["gaps_unfillable"] == 1
        [gap] = state.query(Collections.MARKET_GAPS)
        assert (gap["symbol"], gap["start_ms"], gap["end_ms"], gap["status"]) == (
            BTC,
            *lost,
            "unfillable",
        )
        names = {b.name for b in storage.Client(project=emulators.project).list_blobs(bucket)}
        assert any("/candles_1m/" in n for n in names) and any("/candles_1h/" in n for n in names)
    finally:
        cloud.reset_runtime()
        state.close()
