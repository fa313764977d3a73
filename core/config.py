"""Typed settings: TOML file, then environment, then CLI flags, each overriding the last.

Every section is a msgspec ``Struct`` with unknown keys forbidden, so a typo is an error that
names the key and the file. Plugins declare their own sections through the
``navstream_config_sections`` hook; a section that no loaded plugin declares is an error too.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

import msgspec

from navstream.display import DisplaySettings

Positive = Annotated[int, msgspec.Meta(gt=0)]
Prefix = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-{}]+$")]
#: What a consumer reads (docs/deployment.md, "Orders and events in separate consumers").
Role = Literal["all", "orders", "events"]
ROLES: tuple[Role, ...] = ("all", "orders", "events")


class ConfigError(ValueError):
    """Invalid configuration; the message names the file and the key."""


class RedisSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str = "redis://127.0.0.1:6379/0"
    prefix: Prefix = "navstream"
    group: Prefix = "navstream"
    #: Redis Cluster (docs/scaling.md): a cluster client, and every key under the hash tag
    #: ``{<prefix>}`` so each step's keys share one slot. One prefix per shard.
    cluster: bool = False
    #: ACL user and password (docs/security.md); credentials in ``url`` win over these. The
    #: password comes from the environment only (NAVSTREAM_REDIS_PASSWORD), never from a file.
    username: str = ""
    password: str = ""
    #: CA bundle (PEM) that signed the server's certificate, for ``rediss://`` URLs; empty: the
    #: system's trust store (or ``?ssl_ca_certs=`` in the URL).
    ca_file: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("`url` must start with redis://, rediss:// or unix://")
        if self.cluster and self.url.startswith("unix://"):
            raise ValueError("`cluster` needs a redis:// or rediss:// `url` (a node of the cluster)")
        if self.ca_file and not self.url.startswith("rediss://"):
            raise ValueError("`ca_file` needs a rediss:// (TLS) `url`")

    def __repr__(self) -> str:  # never show a password (in the URL or the field) in a repr
        shown = {name: getattr(self, name) for name in self.__struct_fields__}
        shown["url"] = redact_url(self.url)
        shown["password"] = "***" if self.password else ""
        return f"RedisSettings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


class ConsumerSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Consumer name in the group; empty means ``<host>-<pid>``, unique per process.
    name: str = ""
    #: Which input streams this consumer reads: ``all`` (events, and orders when a plugin
    #: answers them), ``orders`` (only orders, so an order never queues behind an event batch's
    #: plugin work) or ``events`` (every input but orders). Same group and delivery rules in each.
    role: Role = "all"
    #: Role ``all`` only: read and answer ``P:orders`` on a task and connection of their own
    #: (:mod:`navstream.loop.lane`), so an order need not wait for an event batch's awaits. Off
    #: by default: on a small machine the extra round trips cost more than they save
    #: (docs/performance.md); roles ``orders`` and ``events`` are the way to isolate orders.
    orders_lane: bool = False
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 1000
    #: Entries pending this long (their consumer died or failed them) are reclaimed.
    claim_idle_ms: Positive = 30_000
    #: Deliveries after which a failing entry goes to the dead-letter stream.
    max_deliveries: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    #: Approximate MAXLEN of P:nav, P:decisions, P:alerts.
    output_maxlen: Annotated[int, msgspec.Meta(ge=100)] = 100_000
    #: Approximate MAXLEN of P:dlq; nearing it raises an alert.
    dlq_maxlen: Annotated[int, msgspec.Meta(ge=100)] = 1_000_000
    #: Period of the tick: time-based plugin work, heartbeat, reclaim, lag.
    tick_ms: Annotated[int, msgspec.Meta(ge=50, le=60_000)] = 1000
    #: Consumers idle this long with nothing pending are removed from the group.
    remove_idle_consumers_ms: Annotated[int, msgspec.Meta(ge=60_000)] = 3_600_000
    #: Events stamped further than this in the future are dead-lettered (a bad clock would
    #: otherwise win every last-ts-wins comparison for ever). Small: whatever is accepted still
    #: counts as fresh only from when it was received (the nav plugin keeps receipt times).
    max_future_ms: Annotated[int, msgspec.Meta(ge=0)] = 5_000
    #: Upper bound of the reconnect backoff.
    reconnect_max_ms: Annotated[int, msgspec.Meta(ge=100)] = 5_000
    #: An async plugin hook still running after this long fails (like an exception), so one
    #: entry that makes a plugin hang cannot stall the consumers that reclaim it one by one.
    #: A batch spends at most twice this per plugin (the batch call, then its entries one by
    #: one, sharing one budget): keep that below ``claim_idle_ms``, or another consumer
    #: reclaims the batch while this one still works on it (harmless, but wasted).
    hook_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    #: The same alert about a lasting fault (a refused write, a tick hook that keeps failing)
    #: is raised at most once per this many seconds; every occurrence is still counted.
    alert_cooldown_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 60.0
    #: Bytes of entries (field names and values) one read may bring in, roughly: XREADGROUP
    #: and XAUTOCLAIM count entries, not bytes, so a read asks for fewer entries when recent
    #: ones were large (at most ``batch_size``, at least one).
    max_batch_bytes: Annotated[int, msgspec.Meta(ge=65_536, le=1 << 30)] = 16 * 1024 * 1024
    #: An entry larger than this (field names and values) is dead-lettered with its size, not
    #: decoded; the dead letter keeps what identifies it, never its payload.
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=1024, le=512 * 1024 * 1024)] = 1024 * 1024

    def __post_init__(self) -> None:
        if self.claim_idle_ms <= self.block_ms:
            raise ValueError("`claim_idle_ms` must be greater than `block_ms`")
        if self.max_entry_bytes > self.max_batch_bytes:
            raise ValueError("`max_entry_bytes` must not be greater than `max_batch_bytes`")

    @property
    def heartbeat_ttl_ms(self) -> int:
        # outlives a batch that runs into hook timeouts: a slow consumer is not a dead one
        return max(10_000, 5 * self.tick_ms, int(4 * self.hook_timeout_s * 1000))


class PluginSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    #: Plugin names (entry-point names) not to load.
    disabled: list[str] = []
    #: Extra plugin modules by dotted path, loaded exactly like entry points.
    modules: list[str] = []


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The consumer's HTTP endpoint: /healthz, /readyz, /metrics and the status page (docs/observability.md)."""

    #: TCP port; 0 (the default) serves nothing. One port per process: replicas on one host
    #: need one each (containers each have their own network namespace, so they do not).
    port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 0
    #: Address to listen on. Loopback by default, so a laptop's consumer is not reachable from
    #: the network; containers set ``0.0.0.0`` (the image does, through NAVSTREAM_HTTP_HOST).
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)] = "127.0.0.1"
    #: ``/readyz`` stays 200 while the desk's data is stale (a NAV stale or not re-evaluated):
    #: readiness is about this process (Redis, its group, its plugins' health); staleness is in
    #: the metrics and the alerts. ``false`` makes stale data not-ready, as before.
    ready_on_stale_data: bool = True
    #: TCP port of ``navstream ingest``'s /healthz and /metrics; 0 (the default) serves nothing.
    #: Listens on ``host``.
    ingest_port: Annotated[int, msgspec.Meta(ge=0, le=65_535)] = 0


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    redis: RedisSettings = RedisSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    plugins: PluginSettings = PluginSettings()
    http: HttpSettings = HttpSettings()
    display: DisplaySettings = DisplaySettings()
    #: Raw plugin sections, validated by :func:`validate_plugin_sections` once plugins load.
    extra: dict[str, Any] = {}
    source: str = "<defaults>"

    def consumer_name(self) -> str:
        return self.consumer.name or default_consumer_name()


CORE_SECTIONS = ("redis", "consumer", "plugins", "http", "display")
#: The ingest process's section: ``[sources.<name>]`` tables, one per source instance.
SOURCES_SECTION = "sources"

#: Environment overrides, documented in docs/configuration.md (keep in step).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "NAVSTREAM_REDIS_URL": ("redis", "url"),
    "NAVSTREAM_PREFIX": ("redis", "prefix"),
    "NAVSTREAM_GROUP": ("redis", "group"),
    "NAVSTREAM_REDIS_CLUSTER": ("redis", "cluster"),
    "NAVSTREAM_CONSUMER": ("consumer", "name"),
    "NAVSTREAM_CONSUMER_ROLE": ("consumer", "role"),
    "NAVSTREAM_CONSUMER_ORDERS_LANE": ("consumer", "orders_lane"),
    "NAVSTREAM_HTTP_PORT": ("http", "port"),
    "NAVSTREAM_HTTP_HOST": ("http", "host"),
    "NAVSTREAM_HTTP_READY_ON_STALE_DATA": ("http", "ready_on_stale_data"),
    "NAVSTREAM_INGEST_HTTP_PORT": ("http", "ingest_port"),
    "NAVSTREAM_REDIS_USERNAME": ("redis", "username"),
    "NAVSTREAM_REDIS_PASSWORD": ("redis", "password"),
    "NAVSTREAM_REDIS_CA_FILE": ("redis", "ca_file"),
}
#: Environment overrides of whole-number keys: the environment holds text, the file numbers.
_ENV_INTS = {"NAVSTREAM_HTTP_PORT", "NAVSTREAM_INGEST_HTTP_PORT"}
#: Environment overrides of true/false keys.
_ENV_BOOLS = {"NAVSTREAM_REDIS_CLUSTER", "NAVSTREAM_HTTP_READY_ON_STALE_DATA", "NAVSTREAM_CONSUMER_ORDERS_LANE"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


#: CLI flags whose name differs from their key (for error messages).
_FLAGS = {("redis", "url"): "--redis-url", ("consumer", "name"): "--consumer", ("http", "port"): "--http-port"}


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _decode_section(name: str, raw: Any, type_: type, where: str, origins: Mapping[str, str] | None = None) -> Any:
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        text = str(exc).replace("`$.", f"`{name}.").replace("`$`", f"`[{name}]`")
        # A value that came from the environment or a flag is named as such, not blamed on the file.
        from_elsewhere = [
            f"{key} from {origin}"
            for key, origin in (origins or {}).items()
            if f"`{name}.{key}`" in text or f"`{key}`" in text
        ]
        suffix = f" ({', '.join(from_elsewhere)})" if from_elsewhere else ""
        raise ConfigError(f"{where}: [{name}] {text}{suffix}") from exc


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Read a TOML file (or the embedded defaults), then apply environment and CLI overrides.

    :param path: a TOML file; ``None`` uses ``NAVSTREAM_CONFIG`` if set, else the defaults.
    :param env: the environment (``os.environ`` when ``None``).
    :param overrides: ``{section: {key: value}}`` from CLI flags; ``None`` values are skipped.
    """
    env = os.environ if env is None else env
    path = path or env.get("NAVSTREAM_CONFIG") or None
    raw: dict[str, Any] = {}
    where = "<defaults>"
    if path is not None:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read config file: {exc.strerror}") from exc
        try:
            raw = msgspec.toml.decode(data)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from exc

    layered: dict[str, dict[str, Any]] = {}
    for name in CORE_SECTIONS:
        section = raw.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [{name}] must be a table")
        layered[name] = dict(section)
    if layered["redis"].get("password"):  # secrets come from the environment (docs/security.md)
        raise ConfigError(
            f"{where}: [redis] `password` is not read from a file; "
            "set the environment variable NAVSTREAM_REDIS_PASSWORD instead"
        )
    file_url = layered["redis"].get("url")  # nor inside the URL: user:PW@host, :PW@host, ?password=PW
    if isinstance(file_url, str) and "://" in file_url:
        netloc, _, query = file_url.split("://", 1)[1].split("#", 1)[0].partition("?")
        userinfo = netloc.split("/", 1)[0].rpartition("@")[0]
        if userinfo.partition(":")[2] or any(k.lower() == "password" and v for k, v in parse_qsl(query)):
            raise ConfigError(
                f"{where}: [redis] `url` holds a password, which is not read from a file; remove it "
                "and set the environment variable NAVSTREAM_REDIS_PASSWORD instead"
            )
    origins: dict[str, dict[str, str]] = {name: {} for name in CORE_SECTIONS}
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            layered[section][key] = _env_value(var, env[var], where)
            origins[section][key] = f"environment variable {var}"
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                layered[section][key] = value
                origins[section][key] = f"flag {_FLAGS.get((section, key), '--' + key.replace('_', '-'))}"

    redis = _decode_section("redis", layered["redis"], RedisSettings, where, origins["redis"])
    consumer = _decode_section("consumer", layered["consumer"], ConsumerSettings, where, origins["consumer"])
    plugins = _decode_section("plugins", layered["plugins"], PluginSettings, where, origins["plugins"])
    http = _decode_section("http", layered["http"], HttpSettings, where, origins["http"])
    display = _decode_section("display", layered["display"], DisplaySettings, where, origins["display"])
    extra = {k: v for k, v in raw.items() if k not in CORE_SECTIONS}
    for name, value in extra.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: unknown top-level key `{name}` (sections are tables)")
    return Settings(
        redis=redis, consumer=consumer, plugins=plugins, http=http, display=display, extra=extra, source=where
    )


def _env_value(var: str, value: str, where: str) -> Any:
    """An environment variable's text as its key's type (whole numbers and true/false)."""
    if var in _ENV_BOOLS:
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(f"{where}: environment variable {var}: {value!r} is not true or false")
    if var not in _ENV_INTS:
        return value
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{where}: environment variable {var}: {value!r} is not a whole number") from None


def validate_plugin_sections(
    settings: Settings, declared: Mapping[str, type], known_disabled: set[str] | None = None
) -> dict[str, Any]:
    """Decode every plugin section with the type its plugin declared.

    A declared section missing from the file is decoded from ``{}``, so its defaults apply and
    a section whose keys are all mandatory fails loudly at startup.

    :param declared: ``{section: StructType}`` from the loaded plugins.
    :param known_disabled: sections of plugins that exist but are disabled; accepted unchecked.
    :raises ConfigError: an undeclared section or an invalid value, naming key and file.
    """
    known_disabled = known_disabled or set()
    # [sources.*] belongs to `navstream ingest`, which decodes each instance with its kind's
    # settings (navstream.ingest.runner.configure); a consumer sharing the file leaves it alone.
    unknown = sorted(set(settings.extra) - set(declared) - known_disabled - {SOURCES_SECTION})
    if unknown:
        raise ConfigError(
            f"{settings.source}: unknown section [{unknown[0]}]; no loaded plugin declares it "
            f"(declared: {', '.join(sorted(set(declared) | set(CORE_SECTIONS)))})"
        )
    return {
        name: _decode_section(name, settings.extra.get(name, {}), type_, settings.source)
        for name, type_ in declared.items()
    }


def redact_url(url: str) -> str:
    """A Redis URL with every password replaced, fit for logs, errors and status output.

    Passwords hide in the userinfo (``redis://user:pw@host``, ``redis://pw@host`` is read as a
    password by some clients) and in the query (``?password=pw``); all are masked.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        netloc = f"{user}:***@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_PARAMS else (f"{k}={v}" if v else k)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


_SECRET_PARAMS = {"password", "pass", "pwd", "auth", "token"}
