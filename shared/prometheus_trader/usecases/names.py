"""Topic, subscription and collection names shared by the use-cases and the deployment."""

from __future__ import annotations

from typing import Final


class Topics:
    """Pub/Sub topics."""

    SIGNALS: Final = "signals"
    EXECUTIONS: Final = "executions"
    EVENTS: Final = "events"


class Subscriptions:
    """One subscription per consumer of a topic."""

    DISPATCHER: Final = "dispatcher"
    EXECUTOR: Final = "executor"
    EVALUATOR: Final = "evaluator"
    NOTIFIER: Final = "notifier"


class Collections:
    """State-store collections."""

    USERS: Final = "users"
    WATCHLISTS: Final = "watchlists"
    RANKINGS: Final = "rankings"
    SIGNALS: Final = "signals"
    EXECUTIONS: Final = "executions"
    EXECUTION_DECISIONS: Final = "execution_decisions"  # the gate's decision, written once
    POSITIONS: Final = "positions"
    JOURNAL: Final = "journal"
    STATS: Final = "stats"
    EVENTS: Final = "events"
    HEARTBEATS: Final = "heartbeats"
    REPORTS: Final = "reports"
    NOTIFICATIONS: Final = "notifications"
    # the HTTP API (issue 10): hashed bearer tokens, per-token request counters per minute
    API_TOKENS: Final = "api_tokens"
    RATE_LIMITS: Final = "rate_limits"
    EXCHANGE_KEYS: Final = "exchange_keys"  # which exchange is connected; the keys are secrets
    RECONCILIATIONS: Final = "reconciliations"  # reports of ExitMonitor.reconcile
    PORTFOLIO_ACTIONS: Final = "portfolio_actions"  # kill switch, drawdown ladder, BTC dump
    SCALED_ENTRIES: Final = "scaled_entries"  # resting legs of scaled entries
    MARKET_GAPS: Final = "market_gaps"  # 1m ranges the live collector could not fill


def labels(**values: object) -> dict[str, dict[str, str]]:
    """``extra=`` for a log call with Cloud Logging labels (None values dropped)."""
    return {"labels": {k: str(v) for k, v in values.items() if v is not None}}
