"""Plans, risk decisions, orders, fills, positions and executions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from prometheus_trader.domain.market import MarketType, Side
from prometheus_trader.domain.signals import Direction, TakeProfitLevel
from prometheus_trader.domain.users import User


class OrderType(StrEnum):
    """Order types used by the executor."""

    MARKET = "market"
    LIMIT = "limit"
    STOP_MARKET = "stop_market"
    TAKE_PROFIT_MARKET = "take_profit_market"


class OrderStatus(StrEnum):
    """Exchange order state."""

    OPEN = "open"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"


class OrderRequest(BaseModel):
    """What we ask an exchange to do. ``client_order_id`` makes it idempotent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_order_id: str = Field(min_length=1, max_length=36)
    symbol: str
    side: Side
    type: OrderType
    amount: float = Field(gt=0)
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False
    leverage: float | None = None


class Order(BaseModel):
    """An order as the exchange reports it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    type: OrderType
    amount: float
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False
    status: OrderStatus
    filled: float = 0.0
    average: float | None = None
    fee: float = 0.0
    created_ms: int
    updated_ms: int


class Fill(BaseModel):
    """One execution of an order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    client_order_id: str
    account: str
    symbol: str
    side: Side
    ts_ms: int
    price: float
    amount: float
    fee: float


class Balance(BaseModel):
    """Account balance in the settlement currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = "USDT"
    wallet: float
    unrealized_pnl: float = 0.0
    used_margin: float = 0.0

    @property
    def equity(self) -> float:
        """Wallet plus unrealized PnL."""
        return self.wallet + self.unrealized_pnl

    @property
    def free(self) -> float:
        """Equity not tied up as margin."""
        return self.equity - self.used_margin


class ExchangePosition(BaseModel):
    """A net position as the exchange reports it (for reconciliation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str
    symbol: str
    direction: Direction
    amount: float
    entry_price: float


class PlannedOrder(BaseModel):
    """One leg of a trade plan."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    leg: str = Field(description="entry, sl, tp1..tp3")
    side: Side
    type: OrderType
    amount: float = Field(gt=0)
    price: float | None = None
    stop_price: float | None = None
    reduce_only: bool = False


class TradePlan(BaseModel):
    """Sizing of one signal for one user: what would be ordered, in % of equity."""

    model_config = ConfigDict(extra="forbid")

    signal_id: str
    user_id: str
    symbol: str
    exchange: str
    market_type: MarketType
    direction: Direction
    entry_price: float
    stop_loss: float | None
    take_profits: list[TakeProfitLevel]
    amount: float = Field(ge=0)
    notional: float = Field(ge=0)
    equity: float = Field(ge=0)
    leverage: float = Field(ge=1)
    margin: float = Field(ge=0)
    risk_pct: float = Field(ge=0, description="equity lost at the stop, in %")
    stop_distance_pct: float = Field(ge=0)
    position_pct: float = Field(ge=0, description="notional in % of equity")
    reward_risk: float = Field(ge=0)
    orders: list[PlannedOrder] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class RiskCode(StrEnum):
    """Why the risk gate refused (or shrank) a plan."""

    SIGNAL_EXPIRED = "signal_expired"
    USER_PAUSED = "user_paused"
    KILL_SWITCH = "kill_switch"
    NO_STOP_LOSS = "no_stop_loss"
    REWARD_RISK_TOO_LOW = "reward_risk_too_low"
    POSITION_TOO_LARGE = "position_too_large"
    EXPOSURE_CAP = "exposure_cap"
    MAX_OPEN_POSITIONS = "max_open_positions"
    ALREADY_IN_SYMBOL = "already_in_symbol"
    DAILY_LOSS_BREAKER = "daily_loss_breaker"
    CONSECUTIVE_LOSS_BREAKER = "consecutive_loss_breaker"
    MAX_DRAWDOWN = "max_drawdown"
    SYMBOL_EXCLUDED = "symbol_excluded"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    STALE_DATA = "stale_data"
    BELOW_MIN_SIZE = "below_min_size"


class RiskCheck(BaseModel):
    """One rule's verdict with the numbers behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: RiskCode
    passed: bool
    detail: str
    values: dict[str, float] = Field(default_factory=dict)


class RiskDecision(BaseModel):
    """The gate's verdict. ``plan`` is the plan to execute (maybe shrunk) when approved."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    checks: list[RiskCheck]
    plan: TradePlan | None = None
    shrunk: bool = False

    @property
    def reasons(self) -> list[RiskCode]:
        """Codes of the failed checks, in rule order."""
        return [c.code for c in self.checks if not c.passed]


class DecisionOutcome(StrEnum):
    """What one user's executor decided about one signal."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    ADVISED = "advised"
    FAILED = "failed"  # accepted, but execution could not complete (flattened, unfilled)


class ExecutionPhase(StrEnum):
    """How far one execution got; a repeat resumes from here (docs/execution.md)."""

    DECIDED = "decided"  # the gate's decision is recorded; nothing placed yet
    FLATTENING = "flattening"  # the protective orders failed: only flattening may follow


class Execution(BaseModel):
    """The per-(signal, user) record, created-if-absent before any side effect."""

    model_config = ConfigDict(extra="forbid")

    id: str
    signal_id: str
    user_id: str
    symbol: str
    outcome: DecisionOutcome | None = None
    reasons: list[RiskCode] = Field(default_factory=list)
    decision: RiskDecision | None = None
    order_ids: list[str] = Field(default_factory=list)
    position_id: str | None = None
    error: str | None = Field(default=None, description="why the exchange refused, if it did")
    phase: ExecutionPhase | None = None
    exchange_account: str | None = Field(
        default=None,
        description="the account its orders go to, recorded with the decision (a repeat "
        "uses it whatever the user's account now); None, written before: the user's",
    )
    created_at: datetime
    completed_at: datetime | None = None


class PositionStatus(StrEnum):
    """Position lifecycle."""

    OPEN = "open"
    CLOSED = "closed"


class ExitReason(StrEnum):
    """Why a position was closed."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    PROFIT_LOCK = "profit_lock"
    ORDER_FLOW_REVERSAL = "order_flow_reversal"
    ADVERSE_MOVES = "adverse_moves"
    MAX_HOLD = "max_hold"
    KILL_SWITCH = "kill_switch"
    DRAWDOWN = "drawdown"
    BTC_DUMP = "btc_dump"
    OPPOSITE_SIGNAL = "opposite_signal"
    END_OF_DATA = "end_of_data"
    RECONCILED = "reconciled"  # the exchange no longer holds it; closed by reconciliation


class Position(BaseModel):
    """A position we opened, tracked until closed. PnL figures in % of entry notional."""

    model_config = ConfigDict(extra="forbid")

    id: str
    user_id: str
    signal_id: str
    exchange: str
    market_type: MarketType
    symbol: str
    direction: Direction
    exchange_account: str | None = Field(
        default=None,
        description="the account its orders went to (None, written before: the user's); "
        "read it through position_account",
    )
    amount: float = Field(gt=0)
    entry_price: float = Field(gt=0)
    entry_fee: float = 0.0
    leverage: float = 1.0
    stop_loss: float = Field(gt=0)
    take_profits: list[TakeProfitLevel]
    trailing_stop_pct: float
    trail_stop: float | None = None
    best_price: float
    worst_price: float
    stop_order_id: str | None = None
    take_profit_order_ids: list[str] = Field(default_factory=list)
    entry_order_id: str
    opened_at: datetime
    opened_ms: int
    max_hold_minutes: int
    status: PositionStatus = PositionStatus.OPEN
    closed_at: datetime | None = None
    closed_ms: int | None = None
    exit_price: float | None = None
    exit_fee: float = 0.0
    exit_order_id: str | None = None
    exit_reason: ExitReason | None = None
    exit_detail: dict[str, int | float | str] = Field(default_factory=dict)
    realized_pnl: float | None = None
    pnl_pct: float | None = None

    @property
    def notional(self) -> float:
        """Entry notional in quote currency."""
        return self.amount * self.entry_price

    def move_pct(self, price: float) -> float:
        """Favourable move from entry to ``price``, in % (negative = adverse)."""
        return (price - self.entry_price) / self.entry_price * 100 * self.direction.sign

    @property
    def mfe_pct(self) -> float:
        """Maximum favourable excursion, % of entry."""
        return self.move_pct(self.best_price)

    @property
    def mae_pct(self) -> float:
        """Maximum adverse excursion, % of entry (<= 0)."""
        return self.move_pct(self.worst_price)


def position_account(position: Position, user: User | None) -> str:
    """The exchange account holding ``position``'s orders: its own, which may differ from
    the user's current one (a paper <-> live switch while its execution was in flight);
    for a document written before positions carried it, the user's (else the user id,
    the paper account)."""
    if position.exchange_account is not None:
        return position.exchange_account
    return user.exchange_account if user is not None else position.user_id
