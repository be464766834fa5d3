"""Secret Manager ``SecretStore``: one secret per name, its newest version is the value.

Secret ids allow only ``[A-Za-z0-9_-]``, so a name such as ``users/u1/binance/api_secret``
is escaped reversibly: letters, digits and ``-`` stay, every other UTF-8 byte becomes
``_XX`` (``users_2Fu1_2Fbinance_2Fapi_5Fsecret``). The escaping keeps prefixes, so a
name prefix is an id prefix.

Secret Manager refuses an empty payload, so a value is stored as its UTF-8 bytes except
that a value that is empty or starts with NUL gets one NUL in front (``""`` → ``\\x00``).
Values written by hand (console, gcloud, Terraform) read back unchanged.

Values are cached in memory for ``cache_ttl_s`` (keys are read at run time, not through
env vars); a rotation through another instance shows after at most that long. No error
message, log line or repr carries a value: API errors are re-raised with the secret name
and status only, and the client library's debug logs have their payloads redacted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import google_crc32c
from google.api_core import exceptions as gexc
from google.cloud import secretmanager

from prometheus_trader.ports import SecretNotFound

DEFAULT_CACHE_TTL_S = 60.0
MAX_SECRET_ID_LENGTH = 255
_ESCAPE = "_"
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_NUL = "\x00"


# Google picks the regions; a per-region policy would come from Terraform-created secrets.
AUTOMATIC_REPLICATION = secretmanager.Secret(
    replication=secretmanager.Replication(automatic=secretmanager.Replication.Automatic())
)


class SecretManagerError(RuntimeError):
    """A Secret Manager call failed (the message names the secret, never its value)."""


# ---------------------------------------------------------------- name escaping
def encode_name(name: str) -> str:
    """The secret-id form of ``name`` (reversible, prefix-preserving)."""
    out: list[str] = []
    for char in name:
        if char in _PLAIN:
            out.append(char)
        else:
            out.extend(f"{_ESCAPE}{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_name(secret_id: str) -> str:
    """Inverse of ``encode_name``; ValueError for an id it could not have produced."""
    raw = bytearray()
    i = 0
    while i < len(secret_id):
        char = secret_id[i]
        if char == _ESCAPE:
            hex_pair = secret_id[i + 1 : i + 3]
            if len(hex_pair) != 2 or hex_pair != hex_pair.upper():
                raise ValueError(f"bad escape in secret id {secret_id!r}")
            raw.append(int(hex_pair, 16))
            i += 3
        elif char in _PLAIN:
            raw.extend(char.encode("ascii"))
            i += 1
        else:
            raise ValueError(f"unexpected character in secret id {secret_id!r}")
    name = raw.decode("utf-8")
    if encode_name(name) != secret_id:  # e.g. "_41" for a plain "A": not canonical
        raise ValueError(f"secret id {secret_id!r} is not in canonical form")
    return name


def _encode_value(value: str) -> bytes:
    return ((_NUL + value) if value == "" or value.startswith(_NUL) else value).encode("utf-8")


def _decode_value(data: bytes) -> str:
    text = data.decode("utf-8")
    return text[1:] if text.startswith(_NUL) else text


# ------------------------------------------------------------- log redaction
class _RedactPayloads(logging.Filter):
    """Blanks the request/response payloads the client library logs at DEBUG level
    (they hold secret values in base64)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attr in ("httpRequest", "httpResponse", "request", "response"):
            extra = record.__dict__.get(attr)
            if isinstance(extra, dict) and "payload" in extra:
                record.__dict__[attr] = {**extra, "payload": "<redacted>"}
        return True


_LOGGERS_WITH_PAYLOADS = (
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest",
    "google.cloud.secretmanager_v1.services.secret_manager_service.transports.grpc",
)
_REDACTOR = _RedactPayloads()
for _logger_name in _LOGGERS_WITH_PAYLOADS:
    _logger = logging.getLogger(_logger_name)
    if _REDACTOR not in _logger.filters:
        _logger.addFilter(_REDACTOR)


# ---------------------------------------------------------------------- store
class SecretManagerSecretStore:
    """``SecretStore`` on Secret Manager in ``project``; ids start with ``prefix``."""

    def __init__(
        self,
        project: str,
        *,
        client: secretmanager.SecretManagerServiceClient | None = None,
        prefix: str = "",
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not project:
            raise ValueError("project must not be empty")
        if prefix and any(char not in _PLAIN and char != _ESCAPE for char in prefix):
            raise ValueError(f"secret id prefix {prefix!r} may hold only [A-Za-z0-9_-]")
        self._project = project
        self._client = client if client is not None else secretmanager.SecretManagerServiceClient()
        self._prefix = prefix
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}  # name -> (expires at, value)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretManagerSecretStore(project={self._project!r}, prefix={self._prefix!r})"

    # ------------------------------------------------------------ naming
    def secret_id(self, name: str) -> str:
        """The Secret Manager secret id that holds ``name``."""
        if not name:
            raise ValueError("secret name must not be empty")
        secret_id = self._prefix + encode_name(name)
        if len(secret_id) > MAX_SECRET_ID_LENGTH:
            raise ValueError(f"secret name {name!r} is too long for a Secret Manager id")
        return secret_id

    def _secret_path(self, name: str) -> str:
        return f"projects/{self._project}/secrets/{self.secret_id(name)}"

    # ------------------------------------------------------------- cache
    def _cached(self, name: str) -> str | None:
        with self._lock:
            hit = self._cache.get(name)
            if hit is None:
                return None
            if hit[0] <= self._clock():
                del self._cache[name]
                return None
            return hit[1]

    def _remember(self, name: str, value: str) -> None:
        if self._ttl > 0:
            with self._lock:
                self._cache[name] = (self._clock() + self._ttl, value)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)

    # -------------------------------------------------------------- port
    def put_secret(self, name: str, value: str) -> None:
        """Create the secret if needed and add ``value`` as its newest version."""
        path = self._secret_path(name)
        if not isinstance(value, str):
            raise TypeError(f"secret {name!r} must be a string")
        data = _encode_value(value)
        payload = secretmanager.SecretPayload(data=data, data_crc32c=int(google_crc32c.value(data)))
        self._forget(name)
        try:
            try:
                self._client.add_secret_version(parent=path, payload=payload)
            except gexc.NotFound:
                self._create(name)
                self._client.add_secret_version(parent=path, payload=payload)
        except gexc.GoogleAPICallError as err:
            # the server's message is left out: it could quote the request
            raise SecretManagerError(
                f"storing secret {name!r} failed: {type(err).__name__} ({err.code})"
            ) from None
        self._remember(name, value)

    def _create(self, name: str) -> None:
        # AlreadyExists: a concurrent put created it first; our version goes on top of it
        with contextlib.suppress(gexc.AlreadyExists):
            self._client.create_secret(
                parent=f"projects/{self._project}",
                secret_id=self.secret_id(name),
                secret=AUTOMATIC_REPLICATION,
            )

    def get_secret(self, name: str) -> str:
        """The newest version's value (SecretNotFound if missing); cached briefly."""
        cached = self._cached(name)
        if cached is not None:
            return cached
        path = self._secret_path(name)
        try:
            response = self._client.access_secret_version(name=f"{path}/versions/latest")
        except (gexc.NotFound, gexc.FailedPrecondition):
            # FailedPrecondition: the newest version is disabled or destroyed
            raise SecretNotFound(name) from None
        except gexc.GoogleAPICallError as err:
            raise SecretManagerError(
                f"reading secret {name!r} failed: {type(err).__name__} ({err.code})"
            ) from None
        data: bytes = response.payload.data
        checksum = response.payload.data_crc32c
        if checksum and int(checksum) != int(google_crc32c.value(data)):
            raise SecretManagerError(f"secret {name!r} arrived corrupted (CRC32C mismatch)")
        value = _decode_value(data)
        self._remember(name, value)
        return value

    def delete_secret(self, name: str) -> None:
        """Delete the secret and all its versions (no-op if missing)."""
        self._forget(name)
        try:
            self._client.delete_secret(name=self._secret_path(name))
        except gexc.NotFound:
            return  # already gone: deleting is idempotent
        except gexc.GoogleAPICallError as err:
            raise SecretManagerError(
                f"deleting secret {name!r} failed: {type(err).__name__} ({err.code})"
            ) from None

    def list_secrets(self, prefix: str = "") -> list[str]:
        """Names (never values) under ``prefix``, sorted.

        Lists the whole project and filters here: Secret Manager's ``name:`` filter is not
        documented as a prefix match, and a server-side miss would silently drop names."""
        id_prefix = self._prefix + encode_name(prefix)
        names: list[str] = []
        try:
            pages = self._client.list_secrets(
                request={"parent": f"projects/{self._project}", "page_size": 250}
            )
            for secret in pages:
                secret_id = str(secret.name).rsplit("/", 1)[-1]
                if not secret_id.startswith(id_prefix):
                    continue
                try:
                    names.append(decode_name(secret_id[len(self._prefix) :]))
                except ValueError:
                    continue  # a secret someone else named; not one of ours
        except gexc.GoogleAPICallError as err:
            raise SecretManagerError(
                f"listing secrets failed: {type(err).__name__} ({err.code})"
            ) from None
        return sorted(names)


__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "SecretManagerError",
    "SecretManagerSecretStore",
    "decode_name",
    "encode_name",
]
