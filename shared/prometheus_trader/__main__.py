"""``python -m prometheus_trader`` = the ``prometheus-trader`` command."""

from prometheus_trader.cli import app

app(prog_name="prometheus-trader")
