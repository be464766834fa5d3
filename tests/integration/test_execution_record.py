"""The execution record carries the decision from its creation (decided once, one write).

The failure paths are in test_execution_failures.py; these pin the record itself: it is
created with the decision before any order, a racing attempt that decided concurrently
adopts the recorded decision, and a bare claim left by an older version still resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.execution_world import World, make_world

from prometheus_trader.domain.ids import execution_id
from prometheus_trader.domain.trading import DecisionOutcome, Execution, ExecutionPhase
from prometheus_trader.usecases.names import Collections

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


def test_the_record_is_created_with_the_decision_before_the_first_order(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    exec_id = execution_id(signal.id, user.user_id)
    seen: list[Execution] = []

    def spy(_account: str, _request: object) -> None:
        if not seen:
            seen.append(Execution.model_validate(world.state.get(Collections.EXECUTIONS, exec_id)))
        return None

    world.faulty.rules.append(spy)
    done = world.executor.handle(world.message(signal, user))
    (before,) = seen
    assert before.phase is ExecutionPhase.DECIDED and before.decision is not None
    assert before.completed_at is None and before.decision.approved
    assert done.outcome is DecisionOutcome.ACCEPTED and done.decision == before.decision
    assert world.state.get(Collections.EXECUTION_DECISIONS, exec_id) is None


def test_an_attempt_that_loses_the_create_adopts_the_recorded_decision(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    exec_id = execution_id(signal.id, user.user_id)
    # a racing attempt recorded a refusal while this one was deciding (it would approve)
    racer = world.executor._decide(signal, user).model_copy(update={"approved": False})
    real_create = world.state.create

    def create_after_the_racer(collection: str, doc_id: str, data: object) -> bool:
        if collection == Collections.EXECUTIONS and doc_id == exec_id:
            record = Execution.model_validate(data).model_copy(
                update={"decision": racer, "reasons": racer.reasons}
            )
            real_create(collection, doc_id, record.model_dump(mode="json"))
        return real_create(collection, doc_id, data)  # type: ignore[arg-type]

    world.state.create = create_after_the_racer  # type: ignore[method-assign]
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.REJECTED and done.decision == racer
    assert world.open_positions() == []


def test_a_bare_claim_from_an_older_version_is_decided_and_carried_out(world: World) -> None:
    user = world.add_user("trader")
    signal = world.signal()
    exec_id = execution_id(signal.id, user.user_id)
    claim = Execution(
        id=exec_id,
        signal_id=signal.id,
        user_id=user.user_id,
        symbol="",
        created_at=world.clock.now(),
    )
    world.state.create(Collections.EXECUTIONS, exec_id, claim.model_dump(mode="json"))
    done = world.executor.handle(world.message(signal, user))
    assert done.outcome is DecisionOutcome.ACCEPTED and done.position_id is not None
    assert done.phase is ExecutionPhase.DECIDED and done.created_at == claim.created_at
    stored = world.state.get(Collections.EXECUTION_DECISIONS, exec_id)
    assert stored is not None and stored["decision"] == done.decision.model_dump(mode="json")
    again = world.executor.handle(world.message(signal, user, attempt=2))
    assert again == done and len(world.open_positions()) == 1
