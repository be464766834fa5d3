"""Numbers as JSON Schema means them, for request bodies: a JSON number, never a
string or a boolean (pydantic's lax mode would turn ``"5"`` or ``false`` into one), while
``5.0`` still counts as the integer 5 (JSON Schema says it is one).

Use as ``Annotated[float, Field(ge=1), JSON_NUMBER]``: bounds before the validator land
on the number, so they show up in the generated schema as ``minimum``/``maximum``."""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator


def _json_number(value: Any) -> Any:
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be a JSON number")
    return value


JSON_NUMBER = BeforeValidator(_json_number)
