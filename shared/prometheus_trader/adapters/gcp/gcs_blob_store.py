"""Cloud Storage ``BlobStore``: objects in one bucket, optionally under a name prefix.

Keys follow the local blob store's rules (``validate_key``), so a key that works in the
embedded stack works here and nothing can climb out of the prefix. Objects are immutable
in Cloud Storage, so ``append_line`` reads the object and rewrites it with a generation
precondition; a concurrent appender makes the write fail with 412 and we retry on the
fresh object, so no line is ever lost or duplicated.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage  # type: ignore[attr-defined]  # no py.typed

from prometheus_trader.adapters.embedded.local_blob_store import validate_key

# Appends are short read-modify-write cycles. Every lost race means another append went
# through, so each round makes progress; ten tries with a doubling pause capped at 0.5 s
# (about 3 s in all) ride out a burst of concurrent writers without hiding an outage.
APPEND_ATTEMPTS = 10
_FIRST_BACKOFF_S = 0.02
_MAX_BACKOFF_S = 0.5
_LOG_CONTENT_TYPE = "text/plain; charset=utf-8"


class AppendConflict(RuntimeError):
    """``append_line`` lost the generation race too many times in a row."""


def _normalize_prefix(prefix: str) -> str:
    if not prefix:
        return ""
    validate_key(prefix.rstrip("/"))
    return prefix.rstrip("/") + "/"


class GcsBlobStore:
    """``BlobStore`` on a Cloud Storage bucket; keys live under ``prefix`` inside it."""

    def __init__(
        self,
        bucket: str,
        *,
        client: storage.Client | None = None,
        prefix: str = "",
        sleep: Callable[[float], None] = time.sleep,
        signing_credentials: Any = None,
    ) -> None:
        # signed URLs: a key-holding credential signs offline; without one (a function's
        # metadata-server identity) the IAM signBlob API signs as the runtime account
        self._signing_credentials = signing_credentials
        self._client = client if client is not None else storage.Client()
        self._bucket_name = bucket
        self._bucket = self._client.bucket(bucket)
        self._prefix = _normalize_prefix(prefix)
        self._sleep = sleep

    @classmethod
    def ensure_bucket(cls, bucket: str, client: storage.Client | None = None) -> None:
        """Create ``bucket`` if it does not exist (tests and local stacks; production
        buckets come from Terraform)."""
        client = client if client is not None else storage.Client()
        with contextlib.suppress(gexc.Conflict):  # already there: exactly what we wanted
            client.create_bucket(bucket)

    def __repr__(self) -> str:
        return f"GcsBlobStore('gs://{self._bucket_name}/{self._prefix}')"

    @property
    def bucket_name(self) -> str:
        """The bucket holding the objects."""
        return self._bucket_name

    def _object_name(self, key: str) -> str:
        validate_key(key)
        return self._prefix + key

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store an object (one request: uploads are atomic); returns its ``gs://`` URI."""
        name = self._object_name(key)
        self._bucket.blob(name).upload_from_string(bytes(data), content_type=content_type)
        return f"gs://{self._bucket_name}/{name}"

    def get(self, key: str) -> bytes:
        """Read an object (KeyError if missing)."""
        name = self._object_name(key)
        try:
            data: bytes = self._bucket.blob(name).download_as_bytes()
        except gexc.NotFound:
            raise KeyError(key) from None
        return data

    def exists(self, key: str) -> bool:
        """True if the object exists."""
        return bool(self._bucket.blob(self._object_name(key)).exists())

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix`` (plain string prefix), sorted."""
        skip = len(self._prefix)
        names = self._client.list_blobs(self._bucket_name, prefix=self._prefix + prefix)
        return sorted(blob.name[skip:] for blob in names)

    def signed_url(self, key: str, expires_in_s: int = 900) -> str:
        """A V4 signed GET URL valid for ``expires_in_s`` seconds (KeyError if missing)."""
        if expires_in_s <= 0:
            raise ValueError("expires_in_s must be positive")
        blob = self._bucket.blob(self._object_name(key))
        if not blob.exists():
            raise KeyError(key)
        expiration = timedelta(seconds=expires_in_s)
        credentials = self._signing_credentials
        if credentials is not None:
            url: str = blob.generate_signed_url(
                version="v4", expiration=expiration, method="GET", credentials=credentials
            )
            return url
        from google.auth import credentials as auth_credentials

        own = self._client._credentials  # the client's own identity
        if isinstance(own, auth_credentials.Signing):  # holds a key: signs offline
            url = blob.generate_signed_url(version="v4", expiration=expiration, method="GET")
            return url
        # metadata-server credentials hold no key: sign through IAM signBlob as the runtime
        # account (it needs roles/iam.serviceAccountTokenCreator on itself)
        from google.auth.transport import requests as auth_requests

        own.refresh(auth_requests.Request())
        url = blob.generate_signed_url(
            version="v4",
            expiration=expiration,
            method="GET",
            service_account_email=own.service_account_email,
            access_token=own.token,
        )
        return url

    def append_line(self, key: str, line: str) -> None:
        """Append ``line`` plus a newline, creating the object if needed.

        One trailing newline in ``line`` is tolerated; other line breaks are refused so a
        log object always holds exactly one record per line.
        """
        text = line.removesuffix("\n")
        if "\n" in text or "\r" in text:
            raise ValueError("append_line() takes a single line")
        name = self._object_name(key)
        record = (text + "\n").encode("utf-8")
        pause = _FIRST_BACKOFF_S
        for attempt in range(APPEND_ATTEMPTS):
            blob = self._bucket.blob(name)
            try:
                current = blob.download_as_bytes()
                generation = int(blob.generation)  # from the download's response headers
            except gexc.NotFound:
                current, generation = b"", 0  # 0: "only if the object does not exist"
            try:
                self._bucket.blob(name).upload_from_string(
                    current + record,
                    content_type=_LOG_CONTENT_TYPE,
                    if_generation_match=generation,
                )
                return
            except gexc.PreconditionFailed:
                if attempt + 1 < APPEND_ATTEMPTS:
                    self._sleep(pause)
                    pause = min(pause * 2, _MAX_BACKOFF_S)
        raise AppendConflict(
            f"append to {key!r} kept losing to concurrent writers ({APPEND_ATTEMPTS} attempts)"
        )


__all__ = ["APPEND_ATTEMPTS", "AppendConflict", "GcsBlobStore"]
