"""``prometheus-trader users ...``: the operator's user and token commands (the API's
admin routes, from a shell). Acts on the state store the settings select
(``PROMETHEUS_BACKEND``: embedded ``var/service`` or Firestore)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from prometheus_trader.app.cloud import CloudRuntime
from prometheus_trader.app.settings import Settings
from prometheus_trader.domain.users import RiskProfile, TradingMode
from prometheus_trader.usecases.controls import BreakerState, Controls
from prometheus_trader.usecases.users import Role, UseCaseError, UserAccounts

users_app = typer.Typer(help="Users and API tokens (operator).", no_args_is_help=True)
_err = Console(stderr=True, soft_wrap=True)
_out = Console(soft_wrap=True)
T = TypeVar("T")


@contextmanager
def _runtime() -> Iterator[CloudRuntime]:
    runtime = CloudRuntime(Settings())
    try:
        yield runtime
    finally:
        runtime.close()


def _run(action: Callable[[CloudRuntime], T]) -> T:
    with _runtime() as runtime:
        try:
            return action(runtime)
        except UseCaseError as exc:
            _err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None


def _accounts(rt: CloudRuntime) -> UserAccounts:
    return UserAccounts(rt.state, rt.clock)


def _controls(rt: CloudRuntime) -> Controls:
    return Controls(rt.state, rt.clock, secrets=lambda: rt.secrets, blobs=lambda: rt.blobs)


def _show(state: BreakerState) -> None:
    _out.print(
        f"paused={state.paused} kill_switch={state.kill_switch} "
        f"daily_loss_breaker={state.daily_loss_breaker} "
        f"consecutive_losses={state.consecutive_losses}/{state.max_consecutive_losses}: "
        f"{state.detail}"
    )


@users_app.command("add")
def add(
    user_id: str,
    profile: Annotated[RiskProfile, typer.Option(help="risk profile")] = RiskProfile.MODERATE,
    mode: Annotated[
        TradingMode,
        typer.Option(help="trading mode (paper or advisory; live after the user connects keys)"),
    ] = TradingMode.PAPER,
    name: Annotated[str, typer.Option(help="display name")] = "",
) -> None:
    """Create a user and print their first API token (shown once)."""

    def act(rt: CloudRuntime) -> str:
        accounts = _accounts(rt)
        accounts.add(user_id, profile=profile, mode=mode, display_name=name)
        token, _ = accounts.issue_token(user_id)
        return token

    token = _run(act)
    _err.print(f"user {user_id} created; API token (store it now, it is not shown again):")
    _out.print(token)


@users_app.command("list")
def list_users() -> None:
    """Every user with profile, mode and pause state."""
    users = _run(lambda rt: _accounts(rt).all())
    table = Table(title="users")
    for column in ("user_id", "profile", "mode", "paused", "kill_switch", "active"):
        table.add_column(column)
    for u in users:
        table.add_row(
            u.user_id,
            u.risk_profile.value,
            u.mode.value,
            str(u.paused),
            str(u.kill_switch),
            str(u.active),
        )
    _out.print(table)


@users_app.command("token")
def token(
    user_id: Annotated[str | None, typer.Argument(help="the user (omit with --admin)")] = None,
    rotate: Annotated[bool, typer.Option(help="revoke the holder's other tokens")] = False,
    admin: Annotated[bool, typer.Option(help="an admin token (no user)")] = False,
    revoke: Annotated[str | None, typer.Option(help="revoke this token id instead")] = None,
) -> None:
    """Issue (or rotate, or revoke) an API token; a new token is printed once."""
    if revoke is not None:
        _run(lambda rt: _accounts(rt).revoke_token(revoke, user_id=user_id))
        _err.print(f"token {revoke} revoked")
        return
    if admin == (user_id is not None):
        _err.print("[red]error:[/red] give a user id, or --admin without one")
        raise typer.Exit(2)
    role = Role.ADMIN if admin else Role.USER
    issued, record = _run(lambda rt: _accounts(rt).issue_token(user_id, role=role, rotate=rotate))
    _err.print(f"token {record.token_id} ({role.value}); store it now, it is not shown again:")
    _out.print(issued)


@users_app.command("pause")
def pause(
    user_id: str, reason: Annotated[str, typer.Option(help="why")] = "paused by the operator"
) -> None:
    """Stop a user's new trades."""
    _show(_run(lambda rt: _controls(rt).pause(user_id, reason)))


@users_app.command("resume")
def resume(user_id: str) -> None:
    """Let a user trade again (refused while the kill switch or the daily breaker holds)."""
    _show(_run(lambda rt: _controls(rt).resume(user_id)))


@users_app.command("kill")
def kill(
    user_id: str, off: Annotated[bool, typer.Option(help="turn the kill switch off")] = False
) -> None:
    """Kill switch: close every position of the user and stop trading."""
    _show(_run(lambda rt: _controls(rt).kill(user_id, not off)))
