"""Embedded adapters: one machine, no cloud account (DuckDB, local folders, in-process)."""
