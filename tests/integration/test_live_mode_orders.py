"""``mode=live`` reaches the exchange: the deployment's runtime (``CloudRuntime``, what the
executor function and the worker run) sends a live user's orders through ccxt to the
venue with that user's own keys from the secret store, while a paper user of the same
deployment keeps trading on the paper ledger. The venue is the Binance USD-M stand-in
(ccxt's signing and parsing run); the deployment is a demo one (``trading_env=demo``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.integration.ccxt_executors import SYMBOL, long_signal, message
from tests.standins.binance_usdm import serve_binance
from tests.standins.engine import DEFAULT_NOW_MS, Engine

from prometheus_trader.adapters.ccxt.config import LiveTradingRefused
from prometheus_trader.app.cloud import CloudRuntime
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.users import RiskProfile, TradingMode, User
from prometheus_trader.usecases.controls import Controls, ExchangeKeys
from prometheus_trader.usecases.names import Collections
from prometheus_trader.usecases.user_settings import Settings as UserSettings
from prometheus_trader.usecases.user_settings import SettingsUpdate

pytestmark = pytest.mark.integration

ALICE_KEY, ALICE_SECRET = "alice-demo-key", "alice-demo-secret"


def test_live_users_trade_on_the_venue_with_their_keys_paper_users_on_the_ledger(
    tmp_path: Path,
) -> None:
    engine = Engine(keys={ALICE_KEY: ALICE_SECRET})
    now = datetime.fromtimestamp(DEFAULT_NOW_MS / 1000, UTC)
    with serve_binance(engine) as stand:
        rt = CloudRuntime(
            Settings(
                backend="embedded",
                var_dir=tmp_path / "var",
                clock_start=now,
                trading_env="demo",
                exchange_urls=stand.urls,
                warmup_hours=2,
            )
        )
        try:
            for user_id in ("alice", "bob"):
                user = User.with_profile(user_id, RiskProfile.AGGRESSIVE)
                rt.state.create(Collections.USERS, user_id, user.model_dump(mode="json"))
            controls = Controls(
                rt.state,
                rt.clock,
                secrets=lambda: rt.secrets,
                blobs=lambda: rt.blobs,
                trading_env="demo",
            )
            settings = UserSettings(rt.state, controls.trading_account)
            # no keys yet: live mode is refused
            with pytest.raises(Exception, match="needs exchange keys"):
                settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
            controls.connect_keys(
                "alice",
                ExchangeKeys(
                    exchange="binance", env="demo", api_key=ALICE_KEY, secret=ALICE_SECRET
                ),
            )
            settings.update("alice", SettingsUpdate(mode=TradingMode.LIVE))
            alice = rt.state.get(Collections.USERS, "alice")
            assert alice is not None and alice["exchange_account"] == "binance-demo:alice"

            rt.collect()  # the market store the executor's freshness check reads
            signal = long_signal("sig-live-mode", engine.last_price(SYMBOL), rt.clock.now())
            rt.state.create(Collections.SIGNALS, signal.id, signal.model_dump(mode="json"))
            for user_id in ("alice", "bob"):
                done = rt.execute(message(signal.id, user_id))
                assert done.outcome.value == "accepted", (user_id, done)

            # alice's orders are at the venue, signed with her key: entry, stop, target
            venue_orders = [o for o in engine.orders.values() if o.account == ALICE_KEY]
            assert len(venue_orders) == 3
            assert len(engine.orders) == 3, "bob's orders never reach the venue"
            assert any(o.type == "MARKET" and o.status == "FILLED" for o in venue_orders)
            # bob's are on the paper ledger; alice has none there
            paper = rt.paper_exchange
            assert len(paper.orders("bob")) == 3 and paper.orders("alice") == []
            positions = {p["user_id"]: p for p in rt.state.query(Collections.POSITIONS)}
            alice_pos = positions["alice"]
            stop = rt.exchange.fetch_order("binance-demo:alice", alice_pos["stop_order_id"])
            assert stop.status.value == "open" and stop.reduce_only

            # the worker's view: both accounts reconcile clean and the cycle checks both
            report = rt.monitor.reconcile()
            assert report.untracked == {} and report.unknown_on_exchange == []
            cycle = rt.monitor.cycle()
            assert cycle.positions == 2 and cycle.failed == {}
            # a live account in this demo deployment: refused before any request
            with pytest.raises(LiveTradingRefused):
                rt.exchange.fetch_balance("binance-live:alice")
            # and no secret ever lands in the state store
            everything = str({c: rt.state.query(c) for c in ("users", "exchange_keys")})
            assert ALICE_SECRET not in everything and ALICE_KEY not in everything
        finally:
            rt.close()
