"""The one wiring of a run: its adapters, the use-cases over them (``wire``) and the
paper exchange's settings (the embedded run, ``stack run``, the cloud runtime, the backtest)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_trader.adapters.embedded.clocks import SimulatedClock
from prometheus_trader.adapters.embedded.console_notifier import ConsoleNotifier
from prometheus_trader.adapters.embedded.encrypted_secret_store import EncryptedFileSecretStore
from prometheus_trader.adapters.embedded.replay_exchange import ReplayExchange
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.analysts import default_panel
from prometheus_trader.domain.exits import ExitConfig
from prometheus_trader.domain.synthesizer import (
    SignalParams,
    SynthesisPolicy,
    policy_from_name,
)
from prometheus_trader.ports import (
    BlobStore,
    Bus,
    BusMessage,
    Clock,
    Exchange,
    MarketStore,
    Notifier,
    SecretStore,
    StateStore,
    TickSource,
)
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute_batch import ExecuteSignalBatch
from prometheus_trader.usecases.execution_steps import ExecutorConfig
from prometheus_trader.usecases.housekeeping import Housekeeping, TopLiquidConfig
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Subscriptions, Topics
from prometheus_trader.usecases.notify import NotifyEvent
from prometheus_trader.usecases.rank import RankAndPublishSignals, RankerConfig
from prometheus_trader.usecases.report import DailyReporter


@dataclass
class Adapters:
    """The adapters one run uses (embedded, or the cloud ones against emulators)."""

    clock: SimulatedClock
    source: MarketStore
    exchange: ReplayExchange
    market: MarketStore
    state: StateStore
    bus: Bus
    blobs: BlobStore
    notifier: Notifier
    secrets: SecretStore


@dataclass
class Runtime:
    """Every adapter and use-case of one run, wired together.

    ``settle`` returns once everything published so far has been handled.
    """

    settings: Settings
    adapters: Adapters
    usecases: UseCases
    settle: Callable[[], None]
    dead_letters: Callable[[], int]
    locate: Callable[[str], str]
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def clock(self) -> SimulatedClock:
        """The simulated clock."""
        return self.adapters.clock

    @property
    def state(self) -> StateStore:
        """The state store."""
        return self.adapters.state

    @property
    def exchange(self) -> ReplayExchange:
        """The replay exchange."""
        return self.adapters.exchange

    def close(self) -> None:
        """Release everything (last opened, first closed)."""
        for closer in reversed(self.closers):
            closer()


def replay_exchange(
    settings: Settings, source: MarketStore, clock: SimulatedClock, ledger: StateStore
) -> ReplayExchange:
    """The replay exchange over recorded data with the configured paper fills; the paper
    accounts persist in ``ledger`` (the run's state store). One process writes them (the
    run's, or ``stack run``'s in-process functions), so reads trust the exchange's cache."""
    return ReplayExchange(
        source, clock, ledger=ledger, ledger_exclusive=True, **paper_fills(settings)
    )


def paper_fills(settings: Settings) -> dict[str, Any]:
    """The paper exchange's settings (venue, fees, slippage, latency, balance, bars): one
    place for the run, the backtest and the deployed runtime."""
    return {
        "exchange_id": settings.exchange,
        "market_type": settings.market_type,
        "taker_fee": settings.taker_fee_pct / 100,
        "maker_fee": settings.maker_fee_pct / 100,
        "slippage_bps": settings.slippage_bps,
        "latency_ms": settings.latency_ms,
        "starting_balance": settings.paper_starting_balance,
        "bar_timeframe": settings.bar_timeframe or "1m",  # PROMETHEUS_BAR_TIMEFRAME
    }


@dataclass(frozen=True)
class UseCases:
    """Every use-case, wired to one set of adapters."""

    collector: CollectMarketData
    ranker: RankAndPublishSignals
    dispatcher: DispatchSignal
    executor: ExecuteSignalBatch  # both message kinds: per user and per bucket
    evaluator: EvaluateClosedPosition
    notifier: NotifyEvent
    monitor: ExitMonitor
    reporter: DailyReporter
    housekeeping: Housekeeping

    def handlers(self) -> dict[tuple[str, str], Callable[[BusMessage], object]]:
        """(topic, subscription) → the handler that consumes it."""
        return {
            (Topics.SIGNALS, Subscriptions.DISPATCHER): self.dispatcher.handle,
            (Topics.EXECUTIONS, Subscriptions.EXECUTOR): self.executor.handle_message,
            (Topics.EVENTS, Subscriptions.EVALUATOR): self.evaluator.handle,
            (Topics.EVENTS, Subscriptions.NOTIFIER): self.notifier.handle,
        }


def wire(
    settings: Settings,
    *,
    clock: Clock,
    exchange: Exchange,
    market: MarketStore,
    state: StateStore,
    bus: Bus,
    blobs: BlobStore,
    notifier: Notifier,
    ticks: TickSource | None = None,
) -> UseCases:
    """The use-cases over these adapters (the one place they are wired). ``ticks``: the
    worker's live trade stream (``app/streaming.py``); None = the exchange's poll."""
    bars = settings.bar_timeframe or "1m"  # coarse-only stores: their own bars (docs/data.md)
    return UseCases(
        collector=CollectMarketData(
            exchange,
            market,
            clock,
            backfill_minutes=int(settings.warmup_hours * 60),
            timeframe=bars,
        ),
        ranker=RankAndPublishSignals(
            market,
            state,
            bus,
            clock,
            default_panel(),
            synthesis_policy(settings),
            RankerConfig(
                exchange=settings.exchange,
                market_type=settings.market_type,
                btc_symbol=settings.btc_symbol,
                window_hours=settings.analysis_window_hours,
                top_n=settings.top_n,
                signal_ttl_minutes=settings.signal_ttl_minutes,
                strategy=settings.synthesizer,
                signal_params=SignalParams(take_profit_r=settings.take_profit_r),
                timeframe=bars,
            ),
        ),
        dispatcher=DispatchSignal(state, bus, clock, buckets=settings.execution_buckets),
        executor=ExecuteSignalBatch(
            state, exchange, market, bus, blobs, clock, ExecutorConfig(bar_timeframe=bars)
        ),
        evaluator=EvaluateClosedPosition(state, clock),
        notifier=NotifyEvent(notifier, state),
        monitor=ExitMonitor(
            state,
            exchange,
            bus,
            blobs,
            clock,
            exit_config(settings),
            ticks=ticks,
            close_concurrency=settings.monitor_close_concurrency,
        ),
        reporter=DailyReporter(
            state,
            blobs,
            bus,
            clock,
            market,
            exchange=settings.exchange,
            market_type=settings.market_type,
        ),
        housekeeping=Housekeeping(
            state, market, bus, clock, notifier, TopLiquidConfig(exchange=settings.exchange)
        ),
    )


def exit_config(settings: Settings) -> ExitConfig:
    """The exit monitor's rules (the run's worker also schedules its cycles by them)."""
    return ExitConfig()


def wire_adapters(settings: Settings, a: Adapters) -> UseCases:
    """``wire`` over a run's adapters."""
    return wire(
        settings,
        clock=a.clock,
        exchange=a.exchange,
        market=a.market,
        state=a.state,
        bus=a.bus,
        blobs=a.blobs,
        notifier=a.notifier,
    )


def run_outbox_and_secrets(
    settings: Settings, run_dir: Path
) -> tuple[ConsoleNotifier, EncryptedFileSecretStore]:
    """The run's notifier (an outbox file) and secret store (an encrypted local file);
    every runtime keeps these in its run folder."""
    return (
        ConsoleNotifier(run_dir / "outbox.jsonl"),
        EncryptedFileSecretStore(
            run_dir / "secrets.enc", key_file=settings.secret_key_file or run_dir / "secrets.key"
        ),
    )


def synthesis_policy(settings: Settings) -> SynthesisPolicy:
    """The configured synthesizer policy."""
    return policy_from_name(
        settings.synthesizer,
        min_confidence=settings.min_confidence,
        min_agreeing=settings.min_agreeing_analysts,
        scale_to_available=settings.consensus_scale_to_available,
    )
