"""The bundled real-data sample (see PROVENANCE.md): a ready ``DuckDBMarketStore`` folder.

Open it with ``DuckDBMarketStore(SAMPLE_STORE_DIR)``; copy the folder first if you will
write to it (the installed package may be read-only).
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_STORE_DIR = Path(__file__).resolve().parent / "store"
SAMPLE_START_MS = 1_747_785_600_000  # 2025-05-21T00:00:00Z
SAMPLE_END_MS = 1_747_958_400_000  # 2025-05-23T00:00:00Z (exclusive)
SAMPLE_SYMBOLS = (
    "ADA/USDT:USDT",
    "AVAX/USDT:USDT",
    "BCH/USDT:USDT",
    "BNB/USDT:USDT",
    "BTC/USDT:USDT",
    "ENA/USDT:USDT",
    "ETC/USDT:USDT",
    "ETH/USDT:USDT",
    "LAYER/USDT:USDT",
    "LINK/USDT:USDT",
    "LTC/USDT:USDT",
    "SOL/USDT:USDT",
    "SUI/USDT:USDT",
    "XLM/USDT:USDT",
    "XMR/USDT:USDT",
    "XRP/USDT:USDT",
)

__all__ = ["SAMPLE_END_MS", "SAMPLE_START_MS", "SAMPLE_STORE_DIR", "SAMPLE_SYMBOLS"]
