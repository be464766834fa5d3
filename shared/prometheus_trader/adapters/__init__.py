"""Adapters: implementations of the ports (embedded and cloud)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class ClosesOnExit(ABC):
    """``with adapter:`` closes it: the one context-manager pair the adapters that hold a
    connection, client or file share."""

    @abstractmethod
    def close(self) -> None:
        """Release what the adapter holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
