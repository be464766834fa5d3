"""Trigger plumbing of the functions (no cloud): bodies, days, API routes, poison
messages, the shifted clock and the lazy runtime."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.app import triggers
from prometheus_trader.app.cloud import CloudRuntime, ConfigurationError, ShiftedClock
from prometheus_trader.app.settings import Settings
from prometheus_trader.ports import BusMessage
from prometheus_trader.usecases.dispatch import ExecutionRequest

pytestmark = pytest.mark.unit


@dataclass
class FakeRequest:
    method: str = "POST"  # Cloud Scheduler and Pub/Sub push POST
    path: str = "/"
    args: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    def get_data(self) -> bytes:
        return self.body


def test_request_body_accepts_empty_and_objects_only() -> None:
    assert triggers.request_body(FakeRequest(body=b"  ")) == {}
    # a GET's body is never read (a chunked GET that sends nothing must not hang)
    assert triggers.request_body(FakeRequest(method="GET", body=b'{"day": 1}')) == {}
    assert triggers.request_body(FakeRequest(body=b'{"day": "2025-05-21"}')) == {
        "day": "2025-05-21"
    }
    for bad in (b"[1]", b"{nope", b"\xff"):
        with pytest.raises(triggers.BadRequest):
            triggers.request_body(FakeRequest(body=bad))


def test_report_day_defaults_to_yesterday() -> None:
    today = date(2025, 5, 22)
    assert triggers.report_day({}, today) == date(2025, 5, 21)
    assert triggers.report_day({"day": "2025-05-01"}, today) == date(2025, 5, 1)
    for bad in ({"day": 5}, {"day": "yesterday"}):
        with pytest.raises(triggers.BadRequest):
            triggers.report_day(bad, today)


def test_scheduled_maps_bad_bodies_to_400_and_serializes_reports() -> None:
    @dataclass
    class Report:
        done: list[str]
        when: date

    def job(body: dict[str, Any]) -> Report:
        triggers.no_body(body)
        return Report(["b", "a"], date(2025, 5, 21))

    ok = triggers.scheduled(FakeRequest(body=b""), job, stage="x")
    assert ok == ({"stage": "x", "report": {"done": ["b", "a"], "when": "2025-05-21"}}, 200)
    assert triggers.scheduled(FakeRequest(body=b'{"typo": 1}'), job, stage="x")[1] == 400
    assert triggers.scheduled(FakeRequest(method="GET"), job, stage="x")[1] == 405


def pubsub_event(data: object) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "9",
        "source": "//pubsub.googleapis.com/projects/p/topics/executions",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "data": {
            "message": {
                "data": base64.b64encode(json.dumps(data).encode()).decode(),
                "messageId": "9",
            }
        },
    }


def test_deliver_acks_poison_and_propagates_other_errors() -> None:
    seen: list[BusMessage] = []

    def handler(message: BusMessage) -> None:
        ExecutionRequest.model_validate(message.data)
        seen.append(message)

    good = pubsub_event({"signal_id": "s", "user_id": "u"})
    assert triggers.deliver(good, handler, stage="executor") is True
    assert seen[0].topic == "executions"
    assert triggers.deliver(pubsub_event({"signal_id": "s"}), handler, stage="executor") is False
    assert triggers.deliver({"data": "junk"}, handler, stage="executor") is False
    assert len(seen) == 1

    def flaky(message: BusMessage) -> None:
        raise TimeoutError("firestore deadline")

    with pytest.raises(TimeoutError):
        triggers.deliver(good, flaky, stage="executor")


def test_shifted_clock_starts_at_the_pinned_instant_and_moves_with_its_base() -> None:
    base = SimulatedClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock = ShiftedClock(datetime(2025, 5, 21, 8, 0, tzinfo=UTC), base)
    assert clock.now() == datetime(2025, 5, 21, 8, 0, tzinfo=UTC)
    base.advance(2.5)
    assert clock.now_ms() == int(
        datetime(2025, 5, 21, 8, 0, 2, 500_000, tzinfo=UTC).timestamp() * 1000
    )
    assert clock.now_ms() == int(clock.now().timestamp() * 1000)


def test_runtime_builds_lazily_once_and_reports_missing_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = CloudRuntime(Settings(var_dir=tmp_path))
    assert "state" not in repr(runtime)
    assert runtime.dispatcher is runtime.dispatcher
    assert runtime.state is runtime.state
    assert "state" in repr(runtime)
    runtime.close()
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    cloud = CloudRuntime(Settings(var_dir=tmp_path, backend="gcp"))
    with pytest.raises(ConfigurationError, match="project"):
        _ = cloud.state
    with pytest.raises(ConfigurationError, match="bucket"):
        CloudRuntime(Settings(backend="gcp", gcp_project="p")).blobs  # noqa: B018


def test_install_runtime_replaces_the_cached_one_and_reset_forgets_it(tmp_path: Path) -> None:
    from prometheus_trader.app import cloud

    class Stub:  # what `stack run` installs: only what the functions reach, no close()
        def execute(self, message: BusMessage) -> None:
            raise AssertionError("not called here")

    stub = Stub()
    cloud.install_runtime(stub)
    try:
        assert cloud.get_runtime() is stub
    finally:
        cloud.reset_runtime()
    fresh = cloud.get_runtime(lambda: Settings(var_dir=tmp_path))
    assert isinstance(fresh, CloudRuntime)
    cloud.reset_runtime()


def test_scheduled_logs_carry_the_cloud_trace_of_the_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import json
    import logging

    from prometheus_trader.app.logging import configure_logging

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj-1")
    monkeypatch.delenv("PROMETHEUS_GCP_PROJECT", raising=False)
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)  # restored by the autouse fixture
    job_log = logging.getLogger("prometheus_trader.test_job")
    request = FakeRequest(
        method="POST",
        headers={"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"},
    )
    body, status = triggers.scheduled(
        request, lambda _: job_log.info("inside the job"), stage="collector"
    )
    job_log.info("after the request")
    assert status == 200 and body["stage"] == "collector"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    traced = [line for line in lines if line["message"] in ("inside the job", "collector done")]
    assert len(traced) == 2
    for line in traced:
        assert line["logging.googleapis.com/trace"] == (
            "projects/proj-1/traces/105445aa7843bc8bf206b12000100000"
        )
    after = next(line for line in lines if line["message"] == "after the request")
    assert "logging.googleapis.com/trace" not in after


def test_trace_resource_refuses_malformed_headers() -> None:
    from prometheus_trader.app.logging import trace_resource

    good = "105445aa7843bc8bf206b12000100000"
    assert trace_resource(f"{good}/7;o=1", "p") == f"projects/p/traces/{good}"
    assert trace_resource(good, "p") == f"projects/p/traces/{good}"
    assert trace_resource("not-a-trace/1", "p") is None
    assert trace_resource(f"{good}/1", None) is None
    assert trace_resource(None, "p") is None
