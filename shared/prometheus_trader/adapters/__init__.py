"""Adapters: implementations of the ports (embedded and cloud)."""
