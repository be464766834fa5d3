"""Benchmark: the backtest's feature work per ranking, on a market store.

Run: ``.venv/bin/python bench/ranking_features.py --store /tmp/month [--rankings 300]``.
Walks forward through consecutive 5-minute rankings two days into the store's common
range, as the backtest does: ``FeatureSeries.ranking_at`` for every series (what the
ranking scores), then ``FeatureSeries.at`` (all features) for ``--analysed`` of them (the
ranked symbols the backtest analyses; with a checkout from before ``ranking_at`` on
``PYTHONPATH``, ``at`` for every series, as the backtest did then). Prints CPU
milliseconds per ranking and microseconds per call as JSON; ``--compute-features`` also
times ``compute_features`` on the same windows (the live ranker's path), for reference.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.domain.feature_series import FeatureSeries
from prometheus_trader.domain.features import compute_features
from prometheus_trader.domain.market import MINUTE_MS, MarketType

BTC = "BTC/USDT:USDT"


def main() -> int:
    """Time the calls and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--rankings", type=int, default=300)
    parser.add_argument("--analysed", type=int, default=10)
    parser.add_argument("--compute-features", action="store_true")
    args = parser.parse_args()
    data = MemoryMarketData.from_parquet(args.store, "binance", MarketType.PERP)
    series = {k.symbol: FeatureSeries(s) for k, s in sorted(data.series.items(), key=str)}
    btc = series.get(BTC)
    first = max(int(f.series.ts_ms[0]) for f in series.values())
    t0 = first + 2 * 1440 * MINUTE_MS
    times = [t0 + i * 5 * MINUTE_MS for i in range(args.rankings)]
    day = 1440 * MINUTE_MS
    analysed = list(series.values())[: args.analysed]
    cpu_rank = cpu_full = 0.0
    # before ranking_at (an older checkout on PYTHONPATH): every series' full features
    light = hasattr(FeatureSeries, "ranking_at")
    for now in times:
        c0 = time.process_time()
        for fs in series.values():
            if light:
                fs.ranking_at(now, since_ms=now - day)
            else:
                fs.at(now, since_ms=now - day, btc=None if fs is btc else btc)
        c1 = time.process_time()
        for fs in analysed if light else ():  # before: the features were all computed
            fs.at(now, since_ms=now - day, btc=None if fs is btc else btc)
        cpu_rank += c1 - c0
        cpu_full += time.process_time() - c1
    out = {
        "store": str(args.store),
        "rankings": len(times),
        "series": len(series),
        "analysed_per_ranking": len(analysed),
        "cpu_ms_per_ranking": round((cpu_rank + cpu_full) / len(times) * 1e3, 3),
        "ranking_at": light,
        "ranking_at_us": round(cpu_rank / len(times) / len(series) * 1e6, 1) if light else None,
        "at_us": round(
            (cpu_full / max(1, len(analysed)) if light else cpu_rank / len(series))
            / len(times)
            * 1e6,
            1,
        ),
    }
    if args.compute_features:
        c0 = time.process_time()
        for now in times:
            for fs in analysed:
                compute_features(
                    fs.window(now, now - day),
                    btc_1m=None if fs is btc or btc is None else btc.window(now, now - day),
                    funding=[],
                    open_interest=[],
                    now_ms=now,
                )
        cpu = time.process_time() - c0
        out["compute_features_us"] = round(cpu / len(times) / max(1, len(analysed)) * 1e6, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
