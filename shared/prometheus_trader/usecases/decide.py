"""One user's decision on one signal from the documents read for it: pure, no I/O.

The per-user executor (usecases.execute) reads each document itself; a batched executor
reads many users' documents in a few calls and computes each user's decision with
:func:`decide_from_documents`, then writes the stats documents (``reading.new_doc``),
publishes the breaker transitions (``usecases.stats.publish_breaker_events``) and stores
the execution records. The values are those of the per-user path for the same inputs.

For speed across a fan-out, pass the same ``signal``, ``instrument`` and ``now`` objects
for every user: the planner and the gate remember what depends only on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from prometheus_trader.domain.market import Instrument
from prometheus_trader.domain.planner import plan_for_user
from prometheus_trader.domain.risk import RiskContext, evaluate_risk
from prometheus_trader.domain.signals import OpportunitySignal
from prometheus_trader.domain.trading import Position, RiskDecision
from prometheus_trader.domain.users import User
from prometheus_trader.ports import Document
from prometheus_trader.usecases.portfolio import edge_from_journal
from prometheus_trader.usecases.stats import AccountReading, account_fields


class Decided(NamedTuple):
    """The gate's decision and the account reading it was judged on."""

    decision: RiskDecision
    reading: AccountReading


def decide_from_documents(
    signal: OpportunitySignal,
    instrument: Instrument,
    user: User,
    open_positions: list[Position],
    stats_doc: Document | None,
    journal_docs: Iterable[Mapping[str, Any]],
    *,
    equity: float,
    free_margin: float,
    now: datetime,
    data_quality_ok: bool,
    data_age_s: float,
    max_data_age_s: float,
) -> Decided:
    """Plan ``signal`` for ``user`` and judge it, as the executor's ``_decide`` does.

    ``open_positions``: the user's open positions (``Collections.POSITIONS``, user_id and
    status "open"); ``stats_doc``: ``Collections.STATS`` / ``user_stats_id(user_id)``
    (None: none yet); ``journal_docs``: the user's ``Collections.JOURNAL`` entries (read
    only when ``user.kelly_fraction`` is set; else pass ``()``); ``equity`` and
    ``free_margin`` from the user's balance; the data freshness as the executor measures
    it. Pure: the caller writes ``reading.new_doc`` when not None and publishes
    ``reading.transitions``.
    """
    edge = edge_from_journal(journal_docs) if user.kelly_fraction is not None else None
    plan = plan_for_user(signal, user, instrument, equity, edge=edge)
    reading = account_fields(stats_doc, user, now, equity)
    context = RiskContext(
        now=now,
        equity=equity,
        free_margin=free_margin,
        open_positions=open_positions,
        **reading.fields,
        data_quality_ok=data_quality_ok,
        data_age_s=data_age_s,
        max_data_age_s=max_data_age_s,
    )
    return Decided(evaluate_risk(signal, plan, user, context, instrument), reading)
