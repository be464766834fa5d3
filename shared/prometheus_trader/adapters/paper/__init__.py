"""Paper trading persisted in the state store: one ledger for every process."""
