"""Acceptance (issue 10): schemathesis drives the served OpenAPI schema, in process, with
a seeded user's token: over 1,000 generated requests, no 5xx and no response that breaks
the schema (status codes, content types, bodies, headers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.generation.meta import ParameterLocation
from tests.api_support import ApiWorld, api_world

pytestmark = pytest.mark.integration

# one world for the whole module: schemathesis builds the schema (and its tests) at import
_WORLD: ApiWorld = api_world(Path(__import__("tempfile").mkdtemp(prefix="api-st-")))
_TOKENS = {"user": _WORLD.alice, "admin": _WORLD.admin}
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _WORLD.app())
_COUNT = {"requests": 0, "5xx": 0}
EXAMPLES_PER_OPERATION = 50


@pytest.fixture(scope="module", autouse=True)
def _close_world() -> Iterator[None]:
    yield
    _WORLD.close()


# one pytest item per operation (a plain parametrize: schemathesis' own parametrize does
# not collect the same way under pytest-xdist, where the suite runs)
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


def _check(case: schemathesis.Case) -> None:
    def negative(location: ParameterLocation) -> bool:
        return case.meta is not None and case.meta.is_negative_at(location)

    # a valid path reaches the caller's own data (not a 403); a negative one stays broken
    if "user_id" in (case.path_parameters or {}) and not negative(ParameterLocation.PATH):
        case.path_parameters["user_id"] = "me"
    # the token, unless the case is about broken headers (then the 401 is the rejection)
    if not negative(ParameterLocation.HEADER):
        admin = case.path.startswith("/api/v1/admin")
        token = _TOKENS["admin" if admin else "user"]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
    response = case.call()
    _COUNT["requests"] += 1
    if response.status_code >= 500:
        _COUNT["5xx"] += 1
    if case.method == "POST" and case.path.endswith("/tokens") and response.status_code == 201:
        _TOKENS["user"] = response.json()["token"]  # rotation revoked the previous one
    case.validate_response(response)
    assert response.status_code < 500, response.text


@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_api_conforms_to_its_schema(operation: Any) -> None:
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        _check(case)

    run()


def test_over_a_thousand_requests_and_no_5xx() -> None:
    # runs after the generated tests (file order; -p no:randomly in CI's ordering too)
    print(f"schemathesis: {_COUNT['requests']} requests, {_COUNT['5xx']} 5xx")
    assert _COUNT["requests"] >= 1000, _COUNT
    assert _COUNT["5xx"] == 0, _COUNT
