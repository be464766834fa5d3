"""Rebuild the bundled sample store from the recorded Binance USD-M data.

Imports 1m candles, funding rates and 8h mark prices of every symbol that has a 1m file,
for [2025-05-21T00:00Z, 2025-05-23T00:00Z), into ``prometheus_trader/sample/store``.
Format conversion only: no price is changed.

    .venv/bin/python scripts/make_sample.py --source <folder of the freqtrade feather files>

``--source`` is the folder of the recorded freqtrade download (``binance-usdm-2025-05``,
see ``prometheus_trader/sample/PROVENANCE.md``); it is not part of the repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from prometheus_trader.adapters.embedded.duckdb_market_store import DuckDBMarketStore
from prometheus_trader.adapters.importers import import_paths
from prometheus_trader.sample import (
    SAMPLE_END_MS,
    SAMPLE_START_MS,
    SAMPLE_STORE_DIR,
    SAMPLE_SYMBOLS,
)


def sample_files(source: Path, symbols: Sequence[str] = SAMPLE_SYMBOLS) -> list[Path]:
    """The 1m, funding and mark files of ``symbols`` (all must exist)."""
    files = []
    for symbol in symbols:
        stem = symbol.replace("/", "_").replace(":", "_")
        for suffix in ("1m-futures", "8h-funding_rate", "8h-mark"):
            path = source / f"{stem}-{suffix}.feather"
            if not path.is_file():
                raise FileNotFoundError(path)
            files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help="folder holding <BASE>_USDT_USDT-{1m-futures,8h-funding_rate,8h-mark}.feather",
    )
    parser.add_argument("--out", type=Path, default=SAMPLE_STORE_DIR)
    parser.add_argument(
        "--symbols", nargs="+", default=list(SAMPLE_SYMBOLS), help="ccxt perp symbols"
    )
    args = parser.parse_args(argv)
    files = sample_files(args.source, args.symbols)
    # Start from nothing so the result depends only on the source files.
    shutil.rmtree(args.out, ignore_errors=True)
    store = DuckDBMarketStore(args.out)
    report = import_paths(files, store, start_ms=SAMPLE_START_MS, end_ms=SAMPLE_END_MS, strict=True)
    store.close()
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"imported {len(report.files_imported)} files: {report.rows}")
    print(f"sample size: {size / 1e6:.2f} MB in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
