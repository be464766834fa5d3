"""Pure domain: models and rules. Imports no cloud SDK, ccxt, DuckDB or adapter."""
