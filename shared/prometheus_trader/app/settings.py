"""The single source of configuration: environment variables (``PROMETHEUS_*``) and ``.env``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from prometheus_trader.domain.market import MarketType
from prometheus_trader.domain.synthesizer import SignalParams
from prometheus_trader.sample import SAMPLE_STORE_DIR


class Settings(BaseSettings):
    """Every knob of a run. Override with ``PROMETHEUS_<NAME>`` or a ``.env`` file."""

    model_config = SettingsConfigDict(
        env_prefix="PROMETHEUS_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # where things are
    data_dir: Path = Field(
        default=SAMPLE_STORE_DIR, description="market store replayed by the embedded exchange"
    )
    var_dir: Path = Field(default=Path("var"), description="run state, reports, logs")

    # market
    exchange: str = "binance"
    market_type: MarketType = MarketType.PERP
    btc_symbol: str = "BTC/USDT:USDT"

    # replay window (default: the whole data range after the warm-up)
    replay_start: datetime | None = None
    replay_end: datetime | None = None
    warmup_hours: float = Field(default=6.0, ge=1.0, description="history before trading starts")
    drain_hours: float = Field(
        default=6.0, ge=0.0, description="keep monitoring open positions after replay_end"
    )
    bar_timeframe: Literal["1m", "3m", "5m", "15m", "1h"] | None = Field(
        default=None,
        description="bars a run replays; unset: the finest timeframe every symbol of the "
        "store holds (1m when it has them; see docs/data.md, coarse-resolution runs)",
    )

    # cadences (minutes / seconds)
    collect_interval_minutes: int = Field(default=1, ge=1)
    rank_interval_minutes: int = Field(default=5, ge=1)
    monitor_interval_seconds: float = Field(default=2.0, gt=0)
    monitor_close_concurrency: int = Field(
        default=1,
        ge=1,
        le=64,
        description="threads running one exit-monitor cycle's closes, one exchange account's "
        "in order on one thread (1: each close inline, as it is decided, which keeps an "
        "embedded run's event order and so its outbox byte-identical between reruns; the "
        "deployed worker gets Terraform's monitor_close_concurrency, 16 by default)",
    )
    analysis_window_hours: float = Field(default=24.0, ge=2.0)

    # ranking and signals
    top_n: int = Field(default=10, ge=1)
    synthesizer: Literal["consensus", "hierarchical"] = "consensus"
    signal_ttl_minutes: int = Field(default=20, ge=15, le=30)
    min_confidence: float = Field(default=0.65, ge=0, le=1)
    min_agreeing_analysts: int = Field(default=5, ge=1)
    take_profit_r: tuple[float, ...] = Field(
        default=(3.0, 4.0, 5.0),
        description="take-profit levels in multiples of the stop distance (1-3, increasing); "
        "a bracket order uses the first, so it must clear every profile's minimum R:R",
    )
    consensus_scale_to_available: bool = Field(
        default=True,
        description=(
            "scale 'min agreeing' to the analysts that have data (5 of 8 → 4 of 6 when no "
            "open interest or sentiment source exists); false = SPEC-literal 5 of the panel"
        ),
    )

    # paper fills
    taker_fee_pct: float = Field(default=0.05, ge=0)
    maker_fee_pct: float = Field(default=0.02, ge=0)
    slippage_bps: float = Field(default=2.0, ge=0)
    latency_ms: int = Field(default=250, ge=0)
    paper_starting_balance: float = Field(default=10_000.0, gt=0)

    # bus
    max_delivery_attempts: int = Field(default=5, ge=1)
    # hfx (issue 12): the dispatcher's executions messages; 0 = one per user
    execution_buckets: int = Field(
        default=64,
        ge=0,
        le=10_000,
        description="one executions message per bucket of users (stable hash of the user "
        "id), run by the batched executor; 0 = one message per user",
    )

    # logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_file: Path | None = Field(default=None, description="JSON log lines; default var/run/")

    # secrets (embedded): Fernet key file for the encrypted local secret store
    secret_key_file: Path | None = None

    # exchanges (issue 8): live orders need this AND the user's own mode=live
    allow_live: bool = Field(
        default=False,
        description="deployment-wide switch for live trading (PROMETHEUS_ALLOW_LIVE); off = "
        "only demo keys are ever used, live keys cannot even be added",
    )

    trading_env: Literal["demo", "live"] = Field(
        default="live",
        description="where mode=live users' orders go: live = the venue with their live keys "
        "(also needs allow_live); demo = the venue's demo trading with their demo keys",
    )
    exchange_urls: dict[str, str] | None = Field(
        default=None, description="ccxt URL overrides for orders, loopback only (stand-ins)"
    )
    exchange_weight_budget_fraction: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="share of a venue's per-IP request-weight budget (Binance USD-M 2,400/min, "
        "Bybit 600/5 s) that all ccxt clients of the process may use together; 0 = off "
        "(docs/exchanges.md)",
    )

    # services (functions + worker): which adapters app.cloud wires
    backend: Literal["embedded", "gcp"] = Field(
        default="embedded",
        description="embedded = SQLite/in-process bus/local folders under var_dir/service; "
        "gcp = Firestore, Pub/Sub, Cloud Storage, Secret Manager",
    )
    gcp_project: str | None = Field(
        default=None, description="Google Cloud project (default: $GOOGLE_CLOUD_PROJECT)"
    )
    firestore_database: str = "(default)"
    state_prefix: str = Field(default="", description="prepended to every collection name")
    topic_prefix: str = Field(default="", description="prepended to every topic/subscription")
    blob_bucket: str | None = Field(default=None, description="reports and the audit log")
    blob_prefix: str = ""
    market_bucket: str | None = Field(
        default=None, description="market store bucket (default: blob_bucket)"
    )
    market_prefix: str = "market"
    market_cache_dir: Path = Field(
        default=Path("/tmp/prometheus-market"),
        description="local cache of market partitions (functions may only write /tmp)",
    )
    secret_prefix: str = ""
    exchange_mode: Literal["replay"] = Field(
        default="replay",
        description="replay = paper fills (the paper ledger in the state store) at the prices "
        "in the market store: recorded data, or what the live collector writes",
    )
    # live collector (issue 9, docs/collectors.md); unset = the replay collector
    collector_exchange: str | None = Field(
        default=None,
        description="binance (USD-M) or bybit (linear): the collector reads this venue's public "
        "market data through ccxt into the market store; unset = replay (embedded default)",
    )
    collector_env: Literal["demo", "live"] = Field(
        default="live", description="whose market data: the live venue or its demo trading"
    )
    collector_urls: dict[str, str] | None = Field(
        default=None, description="ccxt URL overrides, loopback only (stand-ins in tests)"
    )
    collector_rate_limit_ms: float | None = Field(
        default=None, gt=0, description="ms between requests per unit of weight (ccxt rateLimit)"
    )
    collector_symbols: list[str] | None = Field(default=None, description="None = all active")
    collector_backfill_minutes: int = Field(default=24 * 60, ge=60)
    collector_gap_attempts: int = Field(default=2, ge=1)
    collector_shortlist: int = Field(default=10, ge=0, description="trades for the top N ranked")
    # the worker's live trades (issue 9, docs/streaming.md); unset = the exchange's poll
    stream_exchange: str | None = Field(
        default=None,
        description="binance (USD-M) or bybit (linear): the exit worker streams the trades of "
        "every symbol with an open position over ccxt's websocket API, with a REST fallback; "
        "unset = the exchange "
        "adapter's poll_trades (the replay exchange reads the market store)",
    )
    stream_env: Literal["demo", "live"] = Field(
        default="live", description="the venue's live market or its demo trading"
    )
    stream_urls: dict[str, str] | None = Field(
        default=None,
        description="loopback overrides {ws, fapiPublic (binance) | public (bybit)} for the "
        "stream (stand-ins in tests)",
    )
    stream_stale_after_seconds: float = Field(
        default=10.0,
        gt=0,
        description="a followed symbol silent this long is stale: one system_error alert per "
        "episode, REST polling meanwhile; the exchange-side stop stays in place",
    )
    replay_source_prefix: str = Field(
        default="replay", description="market-store prefix (same bucket) the replay exchange reads"
    )
    clock_start: datetime | None = Field(
        default=None,
        description="pin the service clock: it reads this instant when the process builds its "
        "runtime and runs at real speed from there (replaying recorded data); None = real time",
    )
    clock_anchor: datetime | None = Field(
        default=None,
        description="with clock_start: the wall-clock instant at which the clock reads "
        "clock_start (`stack up` sets it, so every process and a restarted worker share one "
        "time); None = when the process builds its runtime",
    )
    clock_speed: float = Field(
        default=1.0,
        gt=0,
        description="with clock_start: simulated seconds per wall second (`stack up` passes it "
        "on; tests run the emulated stack faster than real time)",
    )
    # notifications (docs/notifications.md); secrets are SecretStore names, never values
    notifier: Literal["console", "routed"] = Field(
        default="console",
        description="console = outbox/stdout only (no network); routed = each user's "
        "webhook / email / Telegram endpoints, plus the console record",
    )
    webhook_max_attempts: int = Field(default=5, ge=1, le=10)
    webhook_rate_per_minute: int = Field(default=30, ge=1, description="per endpoint or chat")
    webhook_allow_private_hosts: bool = Field(
        default=False, description="let webhooks reach loopback/private addresses (tests only)"
    )
    sendgrid_api_key_secret: str = "sendgrid-api-key"
    sendgrid_host: str = "https://api.sendgrid.com"
    notify_from_email: str = "alerts@prometheus.invalid"
    telegram_api_base: str = "https://api.telegram.org"
    telegram_bot_token_secret: str = "telegram-bot-token"
    telegram_webhook_secret_name: str = "telegram-hook-token"
    # the HTTP API (issue 10)
    api_rate_per_minute: int = Field(
        default=120, ge=1, description="requests per token per minute (429 beyond)"
    )
    api_max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="larger request bodies get a 413"
    )
    worker_port: int = Field(default=8080, ge=1, le=65535, description="overridden by $PORT")
    worker_stale_after_seconds: float = Field(
        default=30.0, gt=0, description="/healthz turns 503 when the last cycle is older"
    )
    reconcile_interval_seconds: float = Field(
        default=300.0, gt=0, description="the worker reconciles positions with the exchange"
    )

    @field_validator("take_profit_r")
    @classmethod
    def _take_profit_levels(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        # the planner's own rule, checked when the settings load rather than inside a run
        sizes = len(SignalParams().take_profit_fractions)
        if len(value) != sizes:
            raise ValueError(f"{sizes} levels, one per take-profit size, e.g. [3, 4, 5]")
        try:
            SignalParams(take_profit_r=value)
        except ValidationError as exc:
            messages = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ValueError("; ".join(messages)) from None
        return value

    @property
    def run_dir(self) -> Path:
        """Folder of the current embedded run."""
        return self.var_dir / "run"
