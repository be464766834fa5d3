"""The backtest: the live domain code on an in-memory event loop (no state store, no bus)."""
