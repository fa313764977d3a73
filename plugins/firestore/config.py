"""``[firestore]``: where the sink writes, how much, and the refusals that keep it honest.

The namespace (``env``) has no default and nothing overrides it to ``prod``: a run that does not
say where it writes does not start, and ``prod`` needs ``allow_prod = true`` in the config file
as well, so a laptop pointed at the live project cannot touch the desk's dashboards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

import msgspec

#: The environment variable that may name the namespace instead of ``[firestore] env``.
ENV_VAR = "NAVSTREAM_ENV"
#: The namespace that holds the live dashboards' documents.
PROD = "prod"
ENV_PATTERN = re.compile(r"[a-z0-9-]{1,63}")
#: A Firestore collection id navstream accepts as its root (no ``/``, not ``__...__``).
COLLECTION_PATTERN = re.compile(r"(?!__)[A-Za-z0-9_-]{1,100}")
#: History every this many seconds at the least (when on): one document per scope per interval.
MIN_HISTORY_S = 60.0


class FirestoreConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Off: the plugin does nothing at all (and needs no Google package).
    enabled: bool = False
    #: The Google Cloud project; required when enabled.
    project: str = ""
    #: The namespace the documents go under (``<root>/<env>/...``); else ``NAVSTREAM_ENV``.
    env: str = ""
    #: Writing to ``env = "prod"`` needs this as well.
    allow_prod: bool = False
    #: The top-level collection.
    root_collection: str = "navstream"
    #: Writes (and deletes) per UTC day, shared by every consumer of the group.
    max_writes_per_day: Annotated[int, msgspec.Meta(ge=100, le=1_000_000_000)] = 20_000
    #: At most one write per document per this many seconds.
    min_interval_s: Annotated[float, msgspec.Meta(ge=0.01, le=3600)] = 1.0
    #: Each consumer's heartbeat document is written this often (and when its status changes).
    heartbeat_every_s: Annotated[float, msgspec.Meta(ge=5, le=86_400)] = 300.0
    #: One NAV history document per scope per this many seconds; 0 = no history.
    history_every_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 0.0
    #: History documents kept per scope; older ones are deleted.
    history_keep: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 288
    #: Near the budget, a NAV is written again only if it moved more than this (or its status,
    #: missing or stale sources changed).
    significant_move_pct: Annotated[float, msgspec.Meta(gt=0, le=100)] = 1.0
    #: Documents waiting to be written at most; updates of new documents beyond it are shed
    #: (counted). An update of a document already waiting replaces it and is never shed.
    queue_size: Annotated[int, msgspec.Meta(ge=10, le=1_000_000)] = 10_000
    #: A lasting failure or a low budget is alerted again this often.
    alert_every_s: Annotated[float, msgspec.Meta(ge=1, le=86_400)] = 300.0
    #: Log what would be written; write nothing, contact nothing.
    dry_run: bool = False

    def __post_init__(self) -> None:
        if self.env and not ENV_PATTERN.fullmatch(self.env):
            raise ValueError(f"`firestore.env` must be 1-63 characters of a-z 0-9 -, got {self.env!r}")
        if not COLLECTION_PATTERN.fullmatch(self.root_collection):
            raise ValueError(
                "`firestore.root_collection` must be 1-100 characters of A-Z a-z 0-9 _ - "
                f"and not start with __, got {self.root_collection!r}"
            )
        if self.history_every_s and self.history_every_s < MIN_HISTORY_S:
            raise ValueError(f"`firestore.history_every_s` must be 0 (off) or at least {MIN_HISTORY_S:g}")
        if "/" in self.project:
            raise ValueError(f"`firestore.project` must be a project id, got {self.project!r}")
        if self.enabled and not self.project:
            raise ValueError("`firestore.project` is required when `firestore.enabled = true`")
        if self.enabled and self.env == PROD and not self.allow_prod:
            raise ValueError(_PROD_REFUSED)


_PROD_REFUSED = (
    "refusing to write to env 'prod' without `allow_prod = true` in [firestore]: "
    "the live dashboards' documents are written only by a deployment configured for them"
)


class TargetError(RuntimeError):
    """The sink cannot tell where to write, or must not write there."""


@dataclass(frozen=True)
class Target:
    """Where the documents go: ``<root>/<env>/...`` in ``project``."""

    project: str
    env: str
    root: str

    @property
    def base(self) -> str:
        return f"{self.root}/{self.env}"

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}"


def resolve_target(cfg: FirestoreConfig, environ: Mapping[str, str], *, writing: bool = True) -> Target:
    """The namespace from ``[firestore] env`` or ``NAVSTREAM_ENV``, with every refusal
    (``writing=False``, for a preview: only those about the name).

    :raises TargetError: no namespace, two that disagree, an invalid one, or ``prod`` without
        ``allow_prod``.
    """
    from_env = environ.get(ENV_VAR, "").strip()
    if cfg.env and from_env and cfg.env != from_env:
        raise TargetError(
            f"[firestore] env = {cfg.env!r} but {ENV_VAR}={from_env!r}: the namespace must be "
            "given once, or both must agree"
        )
    env = cfg.env or from_env
    if not env:
        raise TargetError(
            f"no Firestore namespace: set [firestore] env or {ENV_VAR} (dev, staging, prod, ...); "
            "there is no default, so a run never writes into another environment's documents"
        )
    if not ENV_PATTERN.fullmatch(env):
        raise TargetError(f"Firestore namespace {env!r} (from {ENV_VAR}) must be 1-63 characters of a-z 0-9 -")
    if writing and env == PROD and not cfg.allow_prod:
        raise TargetError(_PROD_REFUSED)
    if writing and not cfg.project:
        raise TargetError("`firestore.project` is not set")
    return Target(cfg.project, env, cfg.root_collection)
