"""Telegram bot commands: /status /positions /pause /resume /killswitch for a linked chat.

A chat is linked to one user (``telegram_links/<chat_id>`` → ``{"user_id": …}``); an
unlinked chat changes nothing. Pause, resume and the kill switch set the same user fields
the risk gate and the dispatcher read (``paused``, ``paused_reason``, ``kill_switch``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from prometheus_trader.ports import Clock, Filter, StateStore
from prometheus_trader.usecases.names import Collections, labels
from prometheus_trader.usecases.notify import NotifyCollections

log = logging.getLogger(__name__)

COMMANDS = ("/status", "/positions", "/pause", "/resume", "/killswitch")
HELP = (
    "Commands: /status, /positions, /pause, /resume, "
    "/killswitch (stop trading), /killswitch off (release it)"
)
MAX_LISTED = 20


class TelegramChat(BaseModel):
    """The part of Telegram's Chat object we read."""

    model_config = ConfigDict(extra="ignore")

    id: int


class TelegramMessage(BaseModel):
    """The part of Telegram's Message object we read."""

    model_config = ConfigDict(extra="ignore")

    message_id: int
    chat: TelegramChat
    text: str | None = None


class TelegramUpdate(BaseModel):
    """An update Telegram POSTs to the bot's webhook (other kinds are ignored)."""

    model_config = ConfigDict(extra="ignore")

    update_id: int
    message: TelegramMessage | None = None


@dataclass(frozen=True)
class CommandReply:
    """The text to answer in the chat, and what the command did."""

    chat_id: int
    text: str
    user_id: str | None = None
    action: str = "none"


def link_chat(state: StateStore, chat_id: int, user_id: str) -> None:
    """Link a Telegram chat to a user (an operator or the API does this once)."""
    state.set(
        NotifyCollections.TELEGRAM_LINKS, str(chat_id), {"user_id": user_id, "chat_id": chat_id}
    )


class HandleTelegramCommand:
    """Runs one bot command for the user linked to the chat."""

    def __init__(self, state: StateStore, clock: Clock) -> None:
        self._state = state
        self._clock = clock

    def handle(self, update: TelegramUpdate) -> CommandReply | None:
        """The reply to a command message, None for anything else."""
        message = update.message
        if message is None or not message.text or not message.text.startswith("/"):
            return None
        chat_id = message.chat.id
        words = message.text.split()
        command = words[0].split("@", 1)[0].lower()  # "/pause@PrometheusBot" in groups
        args = [w.lower() for w in words[1:]]
        link = self._state.get(NotifyCollections.TELEGRAM_LINKS, str(chat_id))
        if link is None:
            return CommandReply(chat_id, "This chat is not linked to a Prometheus account.")
        user_id = str(link["user_id"])
        user = self._state.get(Collections.USERS, user_id)
        if user is None:
            return CommandReply(chat_id, "The linked account no longer exists.", user_id)
        if command not in COMMANDS:
            return CommandReply(chat_id, HELP, user_id)
        reply = self._run(command, args, user_id, user)
        log.info(
            "telegram command %s: %s",
            command,
            reply.action,
            extra=labels(stage="telegram", user=user_id),
        )
        return CommandReply(chat_id, reply.text, user_id, reply.action)

    def _run(
        self, command: str, args: list[str], user_id: str, user: dict[str, object]
    ) -> CommandReply:
        when = self._clock.now().isoformat(timespec="seconds")
        if command == "/pause":
            reason = f"paused from Telegram at {when}"
            self._state.update(
                Collections.USERS, user_id, {"paused": True, "paused_reason": reason}
            )
            return CommandReply(0, "Paused: no new trades until /resume.", action="paused")
        if command == "/resume":
            self._state.update(Collections.USERS, user_id, {"paused": False, "paused_reason": None})
            note = (
                " The kill switch is still on (/killswitch off)." if user.get("kill_switch") else ""
            )
            return CommandReply(
                0, "Resumed: new signals are traded again." + note, action="resumed"
            )
        if command == "/killswitch":
            on = args[:1] != ["off"]
            self._state.update(Collections.USERS, user_id, {"kill_switch": on})
            text = "Kill switch ON: no trading." if on else "Kill switch released."
            return CommandReply(0, text, action="kill_switch_on" if on else "kill_switch_off")
        positions = self._open_positions(user_id)
        if command == "/positions":
            if not positions:
                return CommandReply(0, "No open positions.")
            lines = [
                f"{p.get('symbol')} {p.get('direction')} {p.get('amount')} @ {p.get('entry_price')}"
                for p in positions[:MAX_LISTED]
            ]
            more = len(positions) - MAX_LISTED
            return CommandReply(0, "\n".join(lines + ([f"… and {more} more"] if more > 0 else [])))
        paused = (
            f"paused ({user.get('paused_reason') or 'no reason'})"
            if user.get("paused")
            else "active"
        )
        kill = "ON" if user.get("kill_switch") else "off"
        text = (
            f"Account {user_id}: {paused}; kill switch {kill}; "
            f"mode {user.get('mode')}; {len(positions)} open position(s)."
        )
        return CommandReply(0, text)

    def _open_positions(self, user_id: str) -> list[dict[str, object]]:
        docs = self._state.query(
            Collections.POSITIONS,
            [Filter("user_id", "==", user_id), Filter("status", "==", "open")],
        )
        return sorted(docs, key=lambda d: str(d.get("id")))
