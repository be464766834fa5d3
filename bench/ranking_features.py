"""Benchmark: the backtest's feature work per ranking, on a market store.

Run: ``.venv/bin/python bench/ranking_features.py --store /tmp/month [--rankings 300]``.
Walks forward through consecutive 5-minute rankings two days (``--days-in``) into the
store's common range, as the backtest does: ``FeatureSeries.ranking_at`` for every series (what the
ranking scores), then for ``--analysed`` of them (the ranked symbols the backtest
analyses) ``FeatureSeries.regime_at`` and the consensus policy's ``regime_vetoes``, and
``FeatureSeries.at`` (all features) with the eight analysts and ``decide`` for those not
vetoed (``--no-veto``: for all of them, as before the veto; with a checkout from before
``ranking_at`` on ``PYTHONPATH``, ``at`` for every series, as the backtest did then).
Prints CPU milliseconds per ranking and microseconds per call as JSON and writes it to
``bench/results/ranking_features.json`` (``--out``);
``--compute-features`` also times ``compute_features`` on the same windows (the live
ranker's path), for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from prometheus_trader.app.backtest.data import MemoryMarketData
from prometheus_trader.domain.analysts import AnalysisContext, default_panel
from prometheus_trader.domain.feature_series import FeatureSeries
from prometheus_trader.domain.features import compute_features
from prometheus_trader.domain.market import MINUTE_MS, MarketType
from prometheus_trader.domain.synthesizer import ConsensusPolicy

try:  # a checkout from before the veto (on PYTHONPATH) has none
    from prometheus_trader.domain.synthesizer import regime_vetoes
except ImportError:  # pragma: no cover
    regime_vetoes = None  # type: ignore[assignment]

BTC = "BTC/USDT:USDT"
# PROMETHEUS_BENCH_RESULTS_DIR: write elsewhere than bench/results/ (the smoke test does)
RESULTS_DIR = Path(
    os.environ.get("PROMETHEUS_BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)


def main() -> int:
    """Time the calls and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--rankings", type=int, default=300)
    parser.add_argument("--days-in", type=float, default=2.0, help="first ranking, days in")
    parser.add_argument("--analysed", type=int, default=10)
    parser.add_argument("--compute-features", action="store_true")
    parser.add_argument("--no-veto", action="store_true", help="at() for every analysed one")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ranking_features.json")
    args = parser.parse_args()
    data = MemoryMarketData.from_parquet(args.store, "binance", MarketType.PERP)
    series = {k.symbol: FeatureSeries(s) for k, s in sorted(data.series.items(), key=str)}
    btc = series.get(BTC)
    first = max(int(f.series.ts_ms[0]) for f in series.values())
    t0 = first + int(args.days_in * 1440) * MINUTE_MS
    times = [t0 + i * 5 * MINUTE_MS for i in range(args.rankings)]
    day = 1440 * MINUTE_MS
    analysed = list(series.values())[: args.analysed]
    cpu_rank = cpu_regime = cpu_full = cpu_analysts = 0.0
    regimes = fulls = 0
    # before ranking_at (an older checkout on PYTHONPATH): every series' full features
    light = hasattr(FeatureSeries, "ranking_at")
    veto = regime_vetoes is not None and not args.no_veto
    panel, policy = default_panel(), ConsensusPolicy()
    for now in times:
        c0 = time.process_time()
        for fs in series.values():
            if light:
                fs.ranking_at(now, since_ms=now - day)
            else:
                fs.at(now, since_ms=now - day, btc=None if fs is btc else btc)
        cpu_rank += time.process_time() - c0
        for fs in analysed if light else ():  # before: the features were all computed
            c0 = time.process_time()
            if veto:
                regimes += 1
                vetoed = regime_vetoes(policy, panel, fs.regime_at(now, since_ms=now - day))
                cpu_regime += time.process_time() - c0
                if vetoed:
                    continue
            c0 = time.process_time()
            f = fs.at(now, since_ms=now - day, btc=None if fs is btc else btc)
            c1 = time.process_time()
            fulls += 1
            ctx = AnalysisContext(symbol=fs.symbol, features=f)
            policy.decide([a.analyze(ctx) for a in panel], f)
            cpu_full += c1 - c0
            cpu_analysts += time.process_time() - c1
    total = cpu_rank + cpu_regime + cpu_full + cpu_analysts
    out = {
        "store": str(args.store),
        "rankings": len(times),
        "series": len(series),
        "analysed_per_ranking": len(analysed),
        "cpu_ms_per_ranking": round(total / len(times) * 1e3, 3),
        "ranking_at": light,
        "ranking_at_us": round(cpu_rank / len(times) / len(series) * 1e6, 1) if light else None,
        "regime_at_and_veto_us": round(cpu_regime / regimes * 1e6, 1) if regimes else None,
        "not_vetoed_share": round(fulls / max(1, regimes), 3) if regimes else None,
        "at_calls_per_ranking": round(fulls / len(times), 2) if light else len(series),
        "at_us": round(
            (cpu_full / max(1, fulls) if light else cpu_rank / len(times) / len(series)) * 1e6,
            1,
        ),
        "analysts_and_decide_us": round(cpu_analysts / fulls * 1e6, 1) if fulls else None,
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
