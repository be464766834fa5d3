"""The batched executor's decided record, built directly, is the per-user path's
``Execution(...).model_dump(mode="json")``: same keys in the same order, same values
of the same types (a field added to ``Execution`` fails here until it is built too)."""

from __future__ import annotations

import pytest
from _trading_fixtures import T0, instrument, signal, user
from pydantic import TypeAdapter

from prometheus_trader.domain.planner import plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.trading import Execution, ExecutionPhase
from prometheus_trader.domain.users import RiskProfile
from prometheus_trader.usecases.execute_batch import decided_record

pytestmark = pytest.mark.unit


def _same(a: object, b: object, path: str = "") -> None:
    assert type(a) is type(b), f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert isinstance(b, dict)
        assert list(a) == list(b), f"{path}: keys"
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("equity", [10_000.0, 1.0])  # approved; rejected (too small)
@pytest.mark.parametrize("profile", [RiskProfile.MODERATE, RiskProfile.AGGRESSIVE])
def test_decided_record_is_the_execution_models_dump(equity: float, profile: RiskProfile) -> None:
    sig, who, market = signal(), user(profile), instrument()
    plan = plan_for_user(sig, who, market, equity)
    context = RiskContext(
        now=T0, equity=equity, day_start_equity=equity, peak_equity=equity, free_margin=equity
    )
    decision = evaluate_risk(sig, plan, who, context, market)
    assert decision.approved is (equity > 1.0)
    want = Execution(
        id="exec-1",
        signal_id=sig.id,
        user_id=who.user_id,
        symbol=sig.symbol,
        reasons=decision.reasons,
        decision=decision,
        phase=ExecutionPhase.DECIDED,
        exchange_account=who.exchange_account,
        created_at=T0,
    ).model_dump(mode="json")
    created_at = TypeAdapter(type(T0)).dump_python(T0, mode="json")
    _same(decided_record("exec-1", sig, who, decision, created_at), want)
