"""Prometheus: serverless multi-user crypto trading.

Market analysis runs once, globally; trading decisions run per user behind a risk gate.
The package is hexagonal: ``domain`` (pure models and rules) and ``usecases`` speak to
``ports`` (typing.Protocol); ``adapters`` implement the ports; ``app`` wires them.
"""

__version__ = "0.1.0"
