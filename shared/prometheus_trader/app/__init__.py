"""Composition root: settings, logging and the wiring of adapters to use-cases."""
