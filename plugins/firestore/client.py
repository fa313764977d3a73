"""Firestore itself: the optional package, credentials, the client, the startup probe, and the
two stores the sink commits to (Firestore, or the log of a dry run).

Nothing here ever falls back to a client that does nothing: a missing package, missing
credentials or a project that does not answer is an error at startup, with what to do about it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .config import Target
from .documents import Doc

log = logging.getLogger("navstream.firestore")

INSTALL_HINT = "pip install 'navstream[firestore]'"
EMULATOR_VAR = "FIRESTORE_EMULATOR_HOST"
CREDENTIALS_VAR = "GOOGLE_APPLICATION_CREDENTIALS"
SCOPES = ("https://www.googleapis.com/auth/datastore",)
#: The startup probe (one read, one write) must answer within this.
PROBE_TIMEOUT_S = 15.0


class FirestoreUnavailable(RuntimeError):
    """The sink is enabled but cannot write: not installed, no credentials, or no answer."""


def import_firestore() -> Any:
    """``google.cloud.firestore``, or an error that says how to install it."""
    try:
        from google.cloud import firestore
    except ImportError as exc:
        raise FirestoreUnavailable(
            f"[firestore] enabled = true, but google-cloud-firestore is not installed ({exc}): {INSTALL_HINT}"
        ) from exc
    return firestore


def credentials(environ: Mapping[str, str]) -> tuple[Any, str]:
    """The credentials to write with, and where they come from (for the log).

    With ``FIRESTORE_EMULATOR_HOST`` set, the client talks to that emulator, unauthenticated.
    Otherwise Application Default Credentials: ``GOOGLE_APPLICATION_CREDENTIALS`` (a key file
    kept out of the repository), ``gcloud auth application-default login``, or the service
    account of the machine on Google Cloud. May block (it can ask a metadata server): run it in
    a thread.
    """
    host = environ.get(EMULATOR_VAR, "").strip()
    if host:
        return None, f"the Firestore emulator at {host} ({EMULATOR_VAR})"
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError as exc:
        raise FirestoreUnavailable(f"google-auth is not installed ({exc}): {INSTALL_HINT}") from exc
    try:
        creds, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError as exc:
        raise FirestoreUnavailable(
            f"no Google credentials for Firestore ({exc}). Set {CREDENTIALS_VAR} to a service-account key "
            "file (never inside the repository), run `gcloud auth application-default login`, or run on "
            f"Google Cloud with a service account; {EMULATOR_VAR} points navstream at an emulator "
            "instead"
        ) from exc
    source = environ.get(CREDENTIALS_VAR, "").strip()
    return creds, f"the key file in {CREDENTIALS_VAR}" if source else "application default credentials"


def make_client(firestore: Any, project: str, creds: Any) -> Any:
    return firestore.AsyncClient(project=project, credentials=creds)


async def close_client(client: Any) -> None:
    """Close the client's gRPC channel (the async client has no ``close`` of its own)."""
    api = getattr(client, "_firestore_api_internal", None)
    if api is None:
        return
    try:
        await api.transport.close()
    except Exception as exc:  # noqa: BLE001 - closing: nothing left to lose, logged
        log.warning("closing the Firestore client failed", extra={"event": "firestore_close_failed", "error": str(exc)})


class FirestoreStore:
    """Commits documents to Firestore with ``WriteBatch`` (served by both emulators, too).

    Every document gets ``written_at`` (the server's time of the commit) and ``written_by``
    (this consumer).
    """

    dry_run = False

    def __init__(self, firestore: Any, client: Any, target: Target, consumer: str, timeout_s: float) -> None:
        self.firestore = firestore
        self.client = client
        self.target = target
        self.consumer = consumer
        self.timeout_s = timeout_s

    def ref(self, path: str) -> Any:
        return self.client.document(self.target.path(path))

    async def commit(self, docs: Sequence[Doc]) -> None:
        batch = self.client.batch()
        for doc in docs:
            if doc.data is None:
                batch.delete(self.ref(doc.path))
            else:
                batch.set(
                    self.ref(doc.path),
                    {**doc.data, "written_at": self.firestore.SERVER_TIMESTAMP, "written_by": self.consumer},
                )
        # No retry inside the client: the sink retries with its own backoff, and counts each failure.
        await batch.commit(retry=None, timeout=self.timeout_s)

    async def probe(self, doc: Doc) -> None:
        """One read and one write, both within :data:`PROBE_TIMEOUT_S`: credentials, project,
        network and permissions, checked before navstream says it is running."""
        where = f"Firestore project {self.target.project!r} at {self.target.base}/"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await self.ref(doc.path).get(retry=None, timeout=PROBE_TIMEOUT_S)
                await self.commit([doc])
        except TimeoutError as exc:
            raise FirestoreUnavailable(f"{where} did not answer within {PROBE_TIMEOUT_S:g}s") from exc
        except Exception as exc:
            raise FirestoreUnavailable(f"{where} refused the first read/write: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        await close_client(self.client)


class DryRunStore:
    """Logs each document it would write; writes nothing and contacts nothing."""

    dry_run = True

    def __init__(self, target: Target) -> None:
        self.target = target

    async def commit(self, docs: Sequence[Doc]) -> None:
        for doc in docs:
            log.info(
                "firestore dry run: would %s %s",
                "delete" if doc.data is None else "write",
                self.target.path(doc.path),
                extra={
                    "event": "firestore_dry_run",
                    "path": self.target.path(doc.path),
                    "op": "delete" if doc.data is None else "set",
                    "document": doc.data,
                },
            )

    async def aclose(self) -> None:
        pass
