"""Building frozen pydantic models from values that already have the field types.

``Model(**values)`` validates every field (~1 µs per scalar field, ~6 µs for a small
model); pydantic's own ``model_construct`` is slower still (a Python loop over the fields
with alias handling). The backtest builds hundreds of thousands of features, zones, gaps
and analyst views from values it computed itself, already of the declared types (floats
as ``float``, never ``int`` or numpy scalars; enums as members), so validation would only
confirm them. :func:`trusted` sets exactly what validation would have set: ``__dict__``
with every field in declaration order, ``model_fields_set`` = the fields passed (here all
of them), no extra and no private values. The callers' tests compare the result with the
validated model (values with their types, field order, fields set).
"""

from __future__ import annotations

from copy import copy
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["copied", "trusted"]

M = TypeVar("M", bound=BaseModel)
_new = object.__new__
# BaseModel's slots, set through their descriptors (a third cheaper than object.__setattr__)
_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


def trusted(cls: type[M], values: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """``cls(**values)`` without validation; ``values`` holds every field of ``cls`` in
    declaration order, each already of its field's type (the caller's contract);
    ``fields_set``: the fields passed, when the others took their defaults."""
    m = _new(cls)
    _set_dict(m, values)
    _set_fields_set(m, set(values) if fields_set is None else fields_set)
    _set_extra(m, None)
    _set_private(m, None)
    return m


def copied(model: M, update: dict[str, Any]) -> M:
    """``model.model_copy(update=update)``, the same copy pydantic makes (shallow ``__dict__``
    updated, extra copied, fields set plus the updated names), without its generic
    machinery; models with private attributes or ``extra="allow"`` go through pydantic."""
    if model.__pydantic_private__ is not None or model.model_config.get("extra") == "allow":
        return model.model_copy(update=update)
    m = _new(model.__class__)
    values = dict(model.__dict__)
    values.update(update)
    _set_dict(m, values)
    _set_extra(m, copy(model.__pydantic_extra__))
    fields_set = set(model.__pydantic_fields_set__)
    fields_set.update(update)
    _set_fields_set(m, fields_set)
    _set_private(m, None)
    return m
