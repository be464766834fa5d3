"""Least privilege (issue 10): each runtime identity holds exactly the grants its code
uses, derived from the code, and Terraform holds no other.

What an identity's code uses comes from ENTRY: the runtime attribute its entry point
calls (checked against functions/<name>/main.py, app/worker.py, app/api/function.py and
app/cloud.py) and the use-case classes behind it (checked against ``wiring.wire``).
Each use-case's constructor names the ports it takes; its module's source says what it
does with them (publishes to which topic, writes blobs or market data, places orders,
signs URLs). From that the test builds the expected grants and compares them with the
Terraform locals every IAM resource is generated from, both ways: a missing grant breaks
the code, an extra one breaks least privilege.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from typing import Any

import pytest

from prometheus_trader.app import cloud, wiring
from prometheus_trader.app.api import function as api_function
from prometheus_trader.app.triggers import TOPIC_OF
from prometheus_trader.ports import BlobStore, Bus, Exchange, MarketStore, SecretStore, StateStore
from prometheus_trader.usecases.collect import CollectMarketData
from prometheus_trader.usecases.controls import Controls
from prometheus_trader.usecases.dispatch import DispatchSignal
from prometheus_trader.usecases.evaluate import EvaluateClosedPosition
from prometheus_trader.usecases.execute_batch import ExecuteSignalBatch
from prometheus_trader.usecases.housekeeping import Housekeeping
from prometheus_trader.usecases.monitor import ExitMonitor
from prometheus_trader.usecases.names import Topics
from prometheus_trader.usecases.notify import NotifyEvent
from prometheus_trader.usecases.rank import RankAndPublishSignals
from prometheus_trader.usecases.ratelimit import RateLimiter
from prometheus_trader.usecases.report import DailyReporter
from prometheus_trader.usecases.telegram_commands import HandleTelegramCommand
from prometheus_trader.usecases.user_settings import Settings as UserSettingsUseCase
from prometheus_trader.usecases.users import UserAccounts
from prometheus_trader.usecases.watchlist import StoredTopLiquid, Watchlist
from tests.infra.terraform_model import REPO, TerraformModel

pytestmark = pytest.mark.infra

# identity -> (what its entry point calls on the runtime, the use-cases that runs)
ENTRY: dict[str, tuple[str, tuple[type, ...]]] = {
    "collector": ("collect", (CollectMarketData,)),
    "ranker": ("rank", (RankAndPublishSignals,)),
    "dispatcher": ("dispatcher", (DispatchSignal,)),
    "executor": ("execute", (ExecuteSignalBatch,)),
    "evaluator": ("evaluator", (EvaluateClosedPosition,)),
    "notifier": ("notify", (NotifyEvent,)),
    "reporter": ("reporter", (DailyReporter,)),
    "housekeeping": ("housekeeping", (Housekeeping,)),
    "worker": ("monitor", (ExitMonitor,)),
    "api": (
        "serve",
        (UserAccounts, RateLimiter, UserSettingsUseCase, Watchlist, StoredTopLiquid, Controls),
    ),
    "telegram": ("telegram_webhook.handle", (HandleTelegramCommand,)),
}
# Static secrets are read by the notification adapters (webhook signing key, SendGrid,
# Telegram: issue 10 item 2); declared here until those adapters name them in code.
STATIC_SECRET_READERS = {
    "sendgrid-api-key": {"notifier", "housekeeping"},  # housekeeping flushes email digests
    "telegram-bot-token": {"notifier"},
    "webhook-signing-key": {"notifier"},
    "telegram-hook-token": {"telegram"},  # the bot webhook's secret-token header
}
# Grants an identity's notification adapters need beyond its use-cases: the SendGrid
# notifier attaches the stored daily report's HTML (checked against its source below).
ADAPTER_GRANTS = {"notifier": {("bucket:blobs", "read")}}
PRIVATE_EXCHANGE_CALLS = ("create_order", "cancel_order", "fetch_balance", "fetch_positions")

Grant = tuple[str, str]  # (kind, target), e.g. ("publish", "events")


def _ports(cls: type) -> set[type]:
    """Port protocols the constructor takes (directly, optional, or via a provider)."""
    hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    found: set[type] = set()

    def visit(tp: Any) -> None:
        if tp in (StateStore, Bus, BlobStore, MarketStore, SecretStore, Exchange):
            found.add(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                visit(arg)
        elif origin is not None and origin.__name__ == "Callable":
            args = typing.get_args(tp)
            if args:
                visit(args[-1])  # a provider of the port

    for name, tp in hints.items():
        if name != "return":
            visit(tp)
    return found


def _source(cls: type) -> str:
    """The modules of the use-case and of its base classes (``ExecutionSteps``...), plus
    the use-case helpers they import (``audit_order``...)."""
    modules = [
        inspect.getmodule(base)
        for base in cls.__mro__
        if base.__module__.startswith("prometheus_trader.usecases")
    ]
    parts: list[str] = []
    for module in dict.fromkeys(m for m in modules if m is not None):
        parts.append(inspect.getsource(module))
        for value in vars(module).values():
            home = getattr(value, "__module__", "")
            if (
                inspect.isfunction(value)
                and home.startswith("prometheus_trader.usecases")
                and home != module.__name__
            ):
                parts.append(inspect.getsource(value))
    return "\n".join(parts)


def _grants_of(cls: type) -> set[Grant]:
    ports = _ports(cls)
    source = _source(cls)
    grants: set[Grant] = set()
    if StateStore in ports:
        grants.add(("firestore", "user"))
    if Bus in ports:
        topics = set(re.findall(r"Topics\.([A-Z_]+)", source))
        if "publish_event(" in source:
            topics.add("EVENTS")
        assert topics, f"{cls.__name__} takes a bus but names no topic"
        grants |= {("publish", getattr(Topics, t)) for t in topics}
    if BlobStore in ports:
        writes = re.search(r"\.(put|append_line)\(", source)
        grants.add(("bucket:blobs", "write" if writes else "read"))
        if ".signed_url(" in source:
            grants.add(("sign", "self"))
    if MarketStore in ports:
        writes = re.search(r"\.write_[a-z_]+\(", source)
        grants.add(("bucket:market", "write" if writes else "read"))
    if Exchange in ports:
        # the exchange replays recorded data from the market bucket; orders and balances
        # need the user's exchange keys (the ccxt adapter reads them per user)
        grants.add(("bucket:market", "read"))
        if any(f".{call}(" in source for call in PRIVATE_EXCHANGE_CALLS):
            grants.add(("user-secrets", "read"))
    if SecretStore in ports:
        writes = re.search(r"\.(put_secret|delete_secret)\(", source)
        grants.add(("user-secrets", "write" if writes else "read"))
    return grants


def expected_grants() -> dict[str, set[Grant]]:
    """What each identity's code needs."""
    expected: dict[str, set[Grant]] = {}
    for identity, (_, usecases) in ENTRY.items():
        grants: set[Grant] = set()
        for cls in usecases:
            grants |= _grants_of(cls)
        if identity in TOPIC_OF and "triggers.push" in _main(identity):
            grants.add(("publish", TOPIC_OF[identity] + "-dead-letter"))
        grants |= ADAPTER_GRANTS.get(identity, set())
        for secret, readers in STATIC_SECRET_READERS.items():
            if identity in readers:
                grants.add(("static-secret", secret))
        # a market writer reads too; keep the stronger grant only (as Terraform does)
        for bucket in ("bucket:blobs", "bucket:market"):
            if (bucket, "write") in grants:
                grants.discard((bucket, "read"))
        expected[identity] = grants
    return expected


def terraform_grants(tf: TerraformModel) -> dict[str, set[Grant]]:
    """What Terraform grants each runtime identity (from the locals IAM is built from)."""
    held: dict[str, set[Grant]] = {identity: set() for identity in ENTRY}

    def add(identity: str, grant: Grant) -> None:
        assert identity in held, f"grant to unknown identity {identity}"
        held[identity].add(grant)

    for identity in tf.locals["firestore_users"]:
        add(identity, ("firestore", "user"))
    for topic, ids in tf.locals["topic_publishers"].items():
        for identity in ids:
            add(identity, ("publish", topic))
    for topic, ids in tf.locals["dead_letter_publishers"].items():
        for identity in ids:
            add(identity, ("publish", topic + "-dead-letter"))
    level = {"roles/storage.objectUser": "write", "roles/storage.objectViewer": "read"}
    for bucket, roles in tf.locals["bucket_grants"].items():
        for role, ids in roles.items():
            for identity in ids:
                add(identity, (f"bucket:{bucket}", level[role]))
    for secret, ids in tf.locals["secret_readers"].items():
        for identity in ids:
            add(identity, ("static-secret", secret))
    for identity in tf.locals["user_secret_readers"]:
        add(identity, ("user-secrets", "read"))
    for identity in tf.locals["user_secret_writers"]:
        add(identity, ("user-secrets", "write"))
    for identity in tf.locals["url_signers"]:
        add(identity, ("sign", "self"))
    return held


def _main(identity: str) -> str:
    if identity == "worker":
        return inspect.getsource(__import__("prometheus_trader.app.worker").app.worker)
    return (REPO / "functions" / identity / "main.py").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tf() -> TerraformModel:
    return TerraformModel.load()


def test_entry_points_call_what_the_map_says() -> None:
    for identity, (attribute, _) in ENTRY.items():
        source = _main(identity)
        if identity == "api":
            assert "function.serve(" in source
            continue
        if identity == "telegram":
            assert f"{attribute}(" in source
            continue
        assert re.search(rf"\.{attribute}\b", source), f"{identity} does not call {attribute}"
        assert hasattr(cloud.CloudRuntime, attribute), f"CloudRuntime has no {attribute}"


def test_the_map_matches_the_wiring() -> None:
    # every pipeline use-case the map names is the one wire() builds for that attribute
    wired = typing.get_type_hints(wiring.UseCases)
    runtime_source = inspect.getsource(cloud.CloudRuntime)
    for identity, (attribute, usecases) in ENTRY.items():
        if identity == "api":
            api_source = inspect.getsource(api_function) + "".join(
                inspect.getsource(m)
                for m in (
                    __import__("prometheus_trader.app.api.routes").app.api.routes,
                    __import__("prometheus_trader.app.api.auth").app.api.auth,
                )
            )
            for cls in usecases:
                assert f"{cls.__name__}(" in api_source, f"the API does not build {cls.__name__}"
            continue
        if identity == "telegram":
            webhook = inspect.getsource(
                __import__("prometheus_trader.app.telegram_webhook").app.telegram_webhook
            )
            for cls in usecases:
                assert f"{cls.__name__}(" in webhook, f"the webhook does not build {cls.__name__}"
            continue
        targets = set(
            re.findall(
                rf"def {attribute}\(self[^)]*\).*?usecases\.(\w+)", runtime_source, re.DOTALL
            )[:1]
        )
        field = next(iter(targets), attribute)
        assert wired[field] in usecases, (identity, field, wired[field])


def test_api_wires_only_state_secrets_blobs_and_the_exchange() -> None:
    deps_source = inspect.getsource(api_function.api_deps)
    used = set(re.findall(r"runtime\.(\w+)", deps_source))
    assert used <= {"state", "clock", "secrets", "blobs", "exchange", "settings"}, used


def test_each_identity_holds_exactly_what_its_code_uses(tf: TerraformModel) -> None:
    expected = expected_grants()
    held = terraform_grants(tf)
    lines = []
    for identity in sorted(ENTRY):
        extra = held[identity] - expected[identity]
        missing = expected[identity] - held[identity]
        if extra:
            lines.append(f"{identity}: granted but unused: {sorted(extra)}")
        if missing:
            lines.append(f"{identity}: used but not granted: {sorted(missing)}")
    assert not lines, "\n".join(lines)


def test_every_runtime_grant_comes_from_the_modelled_locals(tf: TerraformModel) -> None:
    modelled = {
        "${local.firestore_users}",
        "${toset(local.firestore_users)}",
        "${local.topic_publisher_grants}",
        "${local.dead_letter_publisher_grants}",
        "${local.bucket_role_grants}",
        "${local.secret_reader_grants}",
        "${toset(local.user_secret_readers)}",
        "${toset(local.user_secret_writers)}",
        "${toset(local.url_signers)}",
    }
    for rtype, resources in tf.resources.items():
        if not rtype.endswith(("_iam_member", "_iam_binding")):
            continue
        for name, body in resources.items():
            member = str(body.get("member", ""))
            if "google_service_account.runtime" in member:
                assert body.get("for_each") in modelled, f"{rtype}.{name}: unmodelled grant"


def test_a_new_grant_would_fail(tf: TerraformModel) -> None:
    # the comparison can fail: one extra publisher shows up as unused
    held = terraform_grants(tf)
    held["collector"].add(("publish", "events"))
    assert held["collector"] - expected_grants()["collector"] == {("publish", "events")}


def test_adapter_grants_are_used_by_the_adapters() -> None:
    from prometheus_trader.adapters.notify import sendgrid_email

    assert "self._blobs.get(" in inspect.getsource(sendgrid_email)
