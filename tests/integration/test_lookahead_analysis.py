"""`prometheus-trader lookahead`: 0 differences on the sample, a planted leak is reported.

The leak is planted in the features: the bars handed to the feature computation reach 30
minutes past now and the features are computed "as of" that later time (an off-by-N
slice, the classic backtest bug; the domain's own guard drops bars after its ``now``, so
both are needed). On full data the features then see the future; on data cut at t they
cannot, so decisions made before t differ and the analysis must name them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prometheus_trader.app.backtest import engine as engine_module
from prometheus_trader.app.backtest.engine import BacktestEngine
from prometheus_trader.app.backtest.lookahead import analyse
from prometheus_trader.app.settings import Settings
from prometheus_trader.cli import app
from prometheus_trader.domain.market import MINUTE_MS

pytestmark = pytest.mark.integration
WINDOW = ["--end", "2025-05-21T10:00Z"]


def _settings(var: Path) -> Settings:
    return Settings(
        var_dir=var,
        replay_end=datetime(2025, 5, 21, 10, tzinfo=UTC),
        drain_hours=1.0,
    )


def _leak(engine: BacktestEngine) -> None:
    honest = engine._window

    def peek(key: Any, start_ms: int, now_ms: int) -> Any:
        return honest(key, start_ms, now_ms + 30 * MINUTE_MS)

    engine._window = peek  # type: ignore[method-assign]


def test_the_sample_has_no_lookahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DRAIN_HOURS", "1")
    result = CliRunner().invoke(
        app, ["lookahead", "--var", str(tmp_path), "--cuts", "4", "--quiet", *WINDOW]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "lookahead.json").read_text())
    assert len(report["cuts"]) == 4
    assert report["decisions_compared"] >= 20  # signals, decisions and trades were compared
    assert report["differences"] == []


def test_a_planted_leak_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the backtest reads its features from FeatureSeries (compute_features, by index)
    honest = engine_module.FeatureSeries.at

    def leaking(self: Any, now_ms: int, **kwargs: Any) -> Any:
        return honest(self, now_ms + 30 * MINUTE_MS, **kwargs)

    monkeypatch.setattr(engine_module.FeatureSeries, "at", leaking)
    report = analyse(_settings(tmp_path), cuts=4, engine_hook=_leak)
    assert report.differences, "the leaking feature window went unnoticed"
    kinds = {d.kind for d in report.differences}
    assert "signal" in kinds
    assert all(d.fields() for d in report.differences)
