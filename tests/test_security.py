"""Redis over TLS and with ACL users, against private ``redis-server`` processes (docs/security.md).

Each test module fixture starts its own ``redis-server`` on a free loopback port and kills it at
teardown; the shared Redis on 6379 is never touched. Without ``redis-server`` (or, for TLS,
without certificates: the ``cryptography`` package or the ``openssl`` command) the tests are
skipped locally and fail in CI (``CI=true``).

The ACLs tested are the ones docs/security.md publishes: they are read from its ``acl`` blocks,
so the documentation cannot drift from what was proven to work.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from support import ROOT

from navstream.cli import main
from navstream.client import RiskClient

SECURITY_DOC = ROOT / "docs" / "security.md"
IN_CI = os.environ.get("CI", "").lower() == "true"
ADMIN_PASSWORD = "-".join(("admin", uuid.uuid4().hex))
USER_PASSWORD = "-".join(("user", uuid.uuid4().hex))


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI (CI=true)")
    pytest.skip(f"{what} is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of this test module's own on a free loopback port."""

    def __init__(self, workdir: Path, *args: str) -> None:
        server = shutil.which("redis-server")
        if server is None:
            _missing("redis-server")
        self.port = _free_port()
        self.log = workdir / "redis.log"
        tls = "--tls-port" in args
        port_args = ["--port", "0", "--tls-port", str(self.port)] if tls else ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [
                str(server),
                *port_args,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--logfile",
                str(self.log),
                *[a for a in args if a != "--tls-port"],
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self._log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not listen on {self.port}: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --- certificates -------------------------------------------------------------------------------


def _certs_with_cryptography(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("navstream test CA"))
        .issuer_name(name("navstream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, d / "server.key")


def _certs_with_openssl(d: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        _missing("the cryptography package or the openssl command")

    def run(*args: str) -> None:
        subprocess.run([str(openssl), *args], cwd=d, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=navstream test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    )


def make_certs(d: Path) -> None:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it, in ``d``:
    ``ca.pem``, ``server.pem``, ``server.key`` (generated here, never committed)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _certs_with_openssl(d)
    else:
        _certs_with_cryptography(d)


# --- ACLs from docs/security.md -----------------------------------------------------------------


def documented_acl(user: str, prefix: str, password: str) -> str:
    """The ``user <name> ...`` line docs/security.md gives for ``user``, for ``prefix``."""
    text = SECURITY_DOC.read_text()
    blocks = re.findall(r"```acl\n(.*?)```", text, flags=re.S)
    lines = [
        " ".join(line.split())
        for block in blocks
        for line in re.sub(r"\\\n\s*", " ", block).splitlines()
        if line.startswith(f"user {user} ")
    ]
    assert len(lines) == 1, f"docs/security.md has {len(lines)} ACL lines for {user}"
    line = lines[0].replace(">REPLACE_WITH_PASSWORD", f">{password}")
    return line.replace("navstream:", f"{prefix}:")


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivateRedis, Path]]:
    d = tmp_path_factory.mktemp("tls-redis")
    make_certs(d)
    server = PrivateRedis(
        d,
        "--tls-port",
        "--tls-cert-file",
        str(d / "server.pem"),
        "--tls-key-file",
        str(d / "server.key"),
        "--tls-ca-cert-file",
        str(d / "ca.pem"),
        "--tls-auth-clients",
        "no",
    )
    try:
        yield server, d / "ca.pem"
    finally:
        server.stop()


PREFIX = "sec-" + uuid.uuid4().hex[:8]
USERS = ("navstream-consumer", "navstream-ingest", "navstream-engine")


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    d = tmp_path_factory.mktemp("acl-redis")
    acl = d / "users.acl"
    acl.write_text(
        f"user default on >{ADMIN_PASSWORD} ~* &* +@all\n"
        + "".join(documented_acl(u, PREFIX, USER_PASSWORD) + "\n" for u in USERS)
    )
    server = PrivateRedis(d, "--aclfile", str(acl))
    try:
        yield server
    finally:
        server.stop()


def admin(server: PrivateRedis) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, password=ADMIN_PASSWORD, decode_responses=True)


def as_user(server: PrivateRedis, user: str) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, username=user, password=USER_PASSWORD, decode_responses=True)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def price_fields() -> dict[str, str]:
    return {
        "type": "price",
        "base": "BTC",
        "quote": "USDT",
        "price": "97000.5",
        "source": "manual",
        "ts": str(time.time_ns() // 1_000_000),
    }


def assert_refused(call: Any) -> None:
    """``call()`` is refused by the ACL (directly, or inside a Lua script)."""
    with pytest.raises(redis.exceptions.ResponseError) as info:
        call()
    assert re.search(r"no permissions|can't run this command|NOPERM", str(info.value), re.I), info.value


def group_done(client: redis.Redis, stream: str, count: int) -> None:
    """The group read ``count`` entries of ``stream`` and acknowledged every one."""
    (group,) = client.xinfo_groups(stream)
    assert group["entries-read"] == count
    assert group["pending"] == 0


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "NAVSTREAM_CONFIG",
        "NAVSTREAM_REDIS_URL",
        "NAVSTREAM_REDIS_USERNAME",
        "NAVSTREAM_REDIS_PASSWORD",
        "NAVSTREAM_REDIS_CA_FILE",
        "NAVSTREAM_PREFIX",
        "NAVSTREAM_HTTP_PORT",
    ):
        monkeypatch.delenv(var, raising=False)


# --- TLS ----------------------------------------------------------------------------------------


def test_consumer_over_tls_with_the_ca(
    tls_server: tuple[PrivateRedis, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    prefix = "tls-" + uuid.uuid4().hex[:8]
    url = f"rediss://127.0.0.1:{server.port}/0"
    producer = redis.Redis.from_url(url, ssl_ca_certs=str(ca), decode_responses=True)
    for _ in range(3):
        producer.xadd(f"{prefix}:events", price_fields())
    monkeypatch.setenv("NAVSTREAM_REDIS_URL", url)
    monkeypatch.setenv("NAVSTREAM_REDIS_CA_FILE", str(ca))
    code, _, err = cli(capsys, "run", "--prefix", prefix, "--until-idle", "0.5")
    assert code == 0, err
    group_done(producer, f"{prefix}:events", 3)
    # the CA in the URL's query works the same
    producer.xadd(f"{prefix}:events", price_fields())
    monkeypatch.delenv("NAVSTREAM_REDIS_CA_FILE")
    code, _, err = cli(
        capsys, "run", "--redis-url", f"{url}?ssl_ca_certs={ca}", "--prefix", prefix, "--until-idle", "0.5"
    )
    assert code == 0, err
    group_done(producer, f"{prefix}:events", 4)
    producer.close()


def test_tls_without_the_ca_fails_clearly(
    tls_server: tuple[PrivateRedis, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = tls_server
    prefix = "tls-" + uuid.uuid4().hex[:8]
    code, out, err = cli(capsys, "status", "--redis-url", f"rediss://127.0.0.1:{server.port}/0", "--prefix", prefix)
    assert code == 3, (out, err)
    assert f"Redis at rediss://127.0.0.1:{server.port}/0 is unreachable" in err
    assert "certificate verify failed" in err
    # A consumer rides out an unreachable Redis (it may be restarting): it keeps retrying, and
    # says why in its log, at once.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "navstream.cli",
            "run",
            "--redis-url",
            f"rediss://127.0.0.1:{server.port}/0",
            "--prefix",
            prefix,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("NAVSTREAM_")},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and b"redis_unreachable" not in line:
            line = proc.stdout.readline()
            assert line, "the consumer exited without saying why"
        assert b"certificate verify failed" in line, line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_plain_redis_to_a_tls_port_fails_clearly(
    tls_server: tuple[PrivateRedis, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, ca = tls_server
    code, _, err = cli(capsys, "status", "--redis-url", f"redis://127.0.0.1:{server.port}/0")
    assert code == 3
    assert "is unreachable" in err


def test_ca_file_needs_a_tls_url(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAVSTREAM_REDIS_CA_FILE", "/nonexistent/ca.pem")
    code, _, err = cli(capsys, "status", "--redis-url", "redis://127.0.0.1:1/0")
    assert code == 2
    assert "`ca_file` needs a rediss://" in err


# --- ACL users ----------------------------------------------------------------------------------


def test_consumer_runs_with_the_minimal_acl(
    acl_server: PrivateRedis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    a = admin(acl_server)
    a.acl_log_reset()
    ts = str(time.time_ns() // 1_000_000)
    a.xadd(f"{PREFIX}:events", price_fields())
    a.xadd(f"{PREFIX}:events", {**price_fields(), "base": "ETH", "price": "3000"})
    a.xadd(f"{PREFIX}:events", {"type": "price", "junk": "1"})  # dead-lettered: the DLQ path too
    a.xadd(
        f"{PREFIX}:orders",
        {
            "type": "order",
            "order_id": "o-1",
            "venue": "binance",
            "account": "main",
            "symbol": "BTCUSDT",
            "side": "buy",
            "qty": "0.5",
            "ts": ts,
        },
    )
    monkeypatch.setenv("NAVSTREAM_REDIS_URL", f"redis://127.0.0.1:{acl_server.port}/0")
    monkeypatch.setenv("NAVSTREAM_REDIS_USERNAME", "navstream-consumer")
    monkeypatch.setenv("NAVSTREAM_REDIS_PASSWORD", USER_PASSWORD)
    code, out, err = cli(capsys, "run", "--prefix", PREFIX, "--until-idle", "1")
    assert code == 0, err
    assert USER_PASSWORD not in out + err
    assert a.acl_log() == [], "the consumer was refused a command or key its ACL should allow"
    group_done(a, f"{PREFIX}:events", 3)
    group_done(a, f"{PREFIX}:orders", 1)
    assert a.xlen(f"{PREFIX}:dlq") == 1
    assert a.xlen(f"{PREFIX}:decisions") == 1
    # status with the same user
    code, out, err = cli(capsys, "status", "--prefix", PREFIX)
    assert code == 0, err
    assert a.acl_log() == []
    # the credentials in the URL work the same
    monkeypatch.delenv("NAVSTREAM_REDIS_USERNAME")
    monkeypatch.delenv("NAVSTREAM_REDIS_PASSWORD")
    a.xadd(f"{PREFIX}:events", price_fields())
    url = f"redis://navstream-consumer:{USER_PASSWORD}@127.0.0.1:{acl_server.port}/0"
    code, out, err = cli(capsys, "run", "--redis-url", url, "--prefix", PREFIX, "--until-idle", "0.5")
    assert code == 0, err
    assert USER_PASSWORD not in out + err
    group_done(a, f"{PREFIX}:events", 4)
    a.close()


def test_consumer_acl_refuses_everything_else(acl_server: PrivateRedis) -> None:
    c = as_user(acl_server, "navstream-consumer")
    assert c.ping()
    for refused in (
        lambda: c.set("other:key", "x"),
        lambda: c.xadd("other:events", {"a": "1"}),
        lambda: c.get("other:key"),
        lambda: c.keys("*"),
        lambda: c.flushall(),
        lambda: c.flushdb(),
        lambda: c.config_get("*"),
        lambda: c.execute_command("SHUTDOWN"),
        lambda: c.execute_command("SWAPDB", 0, 1),
        lambda: c.publish("chan", "x"),
        lambda: c.acl_list(),
        lambda: c.execute_command("MIGRATE", "h", 1, "k", 0, 1),
        lambda: c.eval("return redis.call('SET', 'other:key', 'x')", 1, "other:key"),
        lambda: c.eval("return redis.call('FLUSHALL')", 0),
    ):
        assert_refused(refused)
    c.set(f"{PREFIX}:state:probe", "x")  # inside the prefix: allowed
    c.delete(f"{PREFIX}:state:probe")
    c.close()


def test_wrong_password_is_a_clear_error_without_the_password(
    acl_server: PrivateRedis, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAVSTREAM_REDIS_USERNAME", "navstream-consumer")
    monkeypatch.setenv("NAVSTREAM_REDIS_PASSWORD", "not-the-password-" + uuid.uuid4().hex)
    code, out, err = cli(capsys, "status", "--redis-url", f"redis://127.0.0.1:{acl_server.port}/0", "--prefix", PREFIX)
    assert code == 3, (out, err)
    assert "refused the credentials" in err
    assert os.environ["NAVSTREAM_REDIS_PASSWORD"] not in out + err
    wrong = "wrong-" + uuid.uuid4().hex
    url = "redis://navstream-consumer:" + wrong + f"@127.0.0.1:{acl_server.port}/0"
    code, out, err = cli(capsys, "status", "--redis-url", url, "--prefix", PREFIX)
    assert code == 3
    assert "navstream-consumer:***@" in err and url.split(":")[2].split("@")[0] not in out + err


def test_ingest_acl_adds_events_and_alerts_only(acl_server: PrivateRedis) -> None:
    i = as_user(acl_server, "navstream-ingest")
    pipe = i.pipeline(transaction=True)  # what `navstream ingest` sends (navstream.ingest.runner.Ingest.flush)
    pipe.xadd(f"{PREFIX}:events", price_fields())
    pipe.xadd(
        f"{PREFIX}:alerts",
        {"code": "source_incomplete", "severity": "warning", "message": "m"},
        maxlen=1000,
        approximate=True,
    )
    pipe.execute()
    for refused in (
        lambda: i.xadd(f"{PREFIX}:orders", {"type": "order"}),
        lambda: i.xadd(f"{PREFIX}:nav", {"a": "1"}),
        lambda: i.hset(f"{PREFIX}:state:x", "a", "1"),
        lambda: i.xrange(f"{PREFIX}:events"),
        lambda: i.xtrim(f"{PREFIX}:events", maxlen=0),
        lambda: i.delete(f"{PREFIX}:events"),
        lambda: i.keys("*"),
        lambda: i.flushall(),
    ):
        assert_refused(refused)
    i.close()


async def test_engine_acl_submits_orders_and_reads_decisions(acl_server: PrivateRedis) -> None:
    a = admin(acl_server)
    a.acl_log_reset()
    url = f"redis://127.0.0.1:{acl_server.port}/0"
    client = RiskClient.connect(url, PREFIX, username="navstream-engine", password=USER_PASSWORD)
    async with client:
        # no consumer runs: the client's deadline vetoes, after it has written and read through its ACL
        decision = await client.decide(
            order_id="o-engine",
            venue="binance",
            account="main",
            symbol="BTCUSDT",
            side="buy",
            qty="0.5",
            deadline_s=0.5,
        )
        assert decision.timed_out and decision.reasons == ["deadline"], decision  # not client_error
    assert a.acl_log() == [], a.acl_log()
    assert a.xlen(f"{PREFIX}:orders") >= 1
    e = aioredis.Redis(host="127.0.0.1", port=acl_server.port, username="navstream-engine", password=USER_PASSWORD)
    try:
        for refused in (
            e.xadd(f"{PREFIX}:events", {"type": "price"}),
            e.xadd(f"{PREFIX}:decisions", {"a": "1"}),
            e.hset(f"{PREFIX}:state:risk:decisions", "o-x", "{}"),
            e.xrange(f"{PREFIX}:orders"),
            e.get(f"{PREFIX}:state:x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await refused
    finally:
        await e.aclose()
    a.close()


def test_password_is_never_read_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "navstream.toml"
    path.write_text('[redis]\nurl = "redis://127.0.0.1:6379/0"\n' + 'password = "' + 'hunter2"\n')
    code, out, err = cli(capsys, "config", "check", str(path))
    assert code == 2
    assert "NAVSTREAM_REDIS_PASSWORD" in err and "hunter2" not in out + err


def test_settings_repr_hides_passwords() -> None:
    from navstream.config import load_settings

    env = {"NAVSTREAM_REDIS_URL": "rediss://u:" + "pw-in-url@h:1/0"}
    env["NAVSTREAM_REDIS_PASSWORD"] = "-".join(("pw", "in", "env"))
    s = load_settings(env=env)
    assert "pw-in-url" not in repr(s) and "pw-in-env" not in repr(s)
    assert "pw-in-url" not in str(s.redis)


# --- compose: the ingest service and the consumers' stop --------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _mounted_config(service: dict[str, Any]) -> Path:
    """The repository file a service's NAVSTREAM_CONFIG points at, through its read-only mount."""
    config = Path(service["environment"]["NAVSTREAM_CONFIG"])
    mounts = {target: (source, mode) for source, target, *mode in (v.split(":") for v in service["volumes"])}
    source, mode = mounts[str(config.parent)]
    assert mode == ["ro"]
    return ROOT / source / config.name


def test_compose_ingest_service(
    compose: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = compose["services"]["ingest"]
    assert ingest["command"] == ["ingest"]
    assert ingest["depends_on"]["redis"]["condition"] == "service_healthy"
    assert ingest["stop_signal"] == "SIGTERM" and ingest["stop_grace_period"]
    assert ingest.get("deploy", {}).get("replicas", 1) == 1, "two ingest processes publish everything twice"
    # the image's check asks a consumer's /healthz: ingest has its own, on its own port
    port = ingest["environment"]["NAVSTREAM_INGEST_HTTP_PORT"]
    assert port not in ("", "0") and port in ingest["expose"] and "ports" not in ingest
    test = ingest["healthcheck"]["test"]
    assert test[0] == "CMD" and "/healthz" in test[-1] and "NAVSTREAM_INGEST_HTTP_PORT" in test[-1]
    # credentials only from the git-ignored, docker-ignored env file; none in the compose file
    assert ingest["env_file"] == [{"path": ".env", "required": False}]
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", ".env"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    assert ignored == [".env"]
    assert "**/.env" in (ROOT / ".dockerignore").read_text().splitlines()
    for service in compose["services"].values():
        for name in service.get("environment", {}):
            assert not re.search(r"PASSWORD|SECRET|_KEY$|TOKEN", name), f"{name} belongs in .env"
    # the config file it mounts is what `navstream config check` accepts, sources included
    path = _mounted_config(ingest)
    monkeypatch.delenv("NAVSTREAM_PLUGINS", raising=False)
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok") and "[sources." in out


def test_compose_consumers_stop_on_sigterm(compose: dict[str, Any]) -> None:
    consumer = compose["services"]["consumer"]
    assert consumer["stop_signal"] == "SIGTERM"
    assert consumer["stop_grace_period"] == "30s"
    assert consumer["environment"]["NAVSTREAM_HTTP_PORT"] == "8080"
    assert "ports" not in consumer, "the HTTP endpoint is unauthenticated: never publish it"


def test_ingest_service_command_runs_with_the_ingest_acl(
    acl_server: PrivateRedis,
    compose: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What the compose's ingest service runs, once, as the documented ACL user, with the venues
    replaced by a local stub (the config file is the mounted one, only base_url added)."""
    from support.httpstub import Canned, HttpStub

    text = _mounted_config(compose["services"]["ingest"]).read_text()
    now_s = int(time.time())
    with HttpStub() as stub:
        stub.always(
            "/api/v3/simple/price",
            Canned(
                json={
                    cg: {"usd": 1.5, "last_updated_at": now_s} for cg in ("bitcoin", "ethereum", "tether", "usd-coin")
                }
            ),
        )
        stub.always(
            "/api/v3/ticker/price",
            Canned(
                json=[
                    {"symbol": "BTCUSDT", "price": "97000.00000000"},
                    {"symbol": "ETHUSDT", "price": "3000.00000000"},
                    {"symbol": "ETHBTC", "price": "0.03100000"},
                ]
            ),
        )
        text = text.replace("[sources.coingecko]\n", f'[sources.coingecko]\nbase_url = "{stub.url}/api/v3"\n')
        text = text.replace("[sources.binance-prices]\n", f'[sources.binance-prices]\nbase_url = "{stub.url}"\n')
        path = tmp_path / "ingest.toml"
        path.write_text(text)
        monkeypatch.setenv("NAVSTREAM_REDIS_URL", f"redis://127.0.0.1:{acl_server.port}/0")
        monkeypatch.setenv("NAVSTREAM_PREFIX", PREFIX)
        monkeypatch.setenv("NAVSTREAM_REDIS_USERNAME", "navstream-ingest")
        monkeypatch.setenv("NAVSTREAM_REDIS_PASSWORD", USER_PASSWORD)
        a = admin(acl_server)
        a.acl_log_reset()
        before = a.xlen(f"{PREFIX}:events")
        code, out, err = cli(capsys, "ingest", "--once", "--config", str(path))
        assert code == 0, err
        assert a.acl_log() == []
        entries = a.xrange(f"{PREFIX}:events")[before:]
        prices = {(f["source"], f["base"]) for _, f in entries if f["type"] == "price"}
        assert ("binance-prices", "ETH") in prices and ("coingecko", "USDC") in prices
        assert {f["source"] for _, f in entries if f["type"] == "source_status" and f["ok"] == "true"} == {
            "coingecko",
            "binance-prices",
        }
        a.close()


# --- the secret scan --------------------------------------------------------------------------


def _scan_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("secret_scan", ROOT / "tools" / "secret_scan.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_secret_scan_passes_on_the_repository() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "secret_scan.py")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "no credentials" in done.stdout
    assert "python tools/secret_scan.py" in (ROOT / ".ci" / "run").read_text()


def test_secret_scan_finds_each_kind(tmp_path: Path) -> None:
    scan = _scan_module()
    pem = (
        "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIB\n-----END RSA " + "PRIVATE KEY-----\n"
    )  # split: no scanner trips on this file
    sa = (
        '{"type": "service_'
        + 'account", "project_id": "p", "private_key": "'
        + "-" * 5
        + 'BEGIN..\\nabcdefghijklmnop"}'
    )
    aws = "aws_access_key_id = " + "AKIA" + "ABCDEFGHIJKLMNOP\n"
    binance = 'BINANCE_API_KEY: "' + uuid.uuid4().hex + uuid.uuid4().hex.upper() + '"\n'
    cases = {
        "k.txt": (pem, "private key"),
        "sa.json": (sa, "service-account"),
        "c.ini": (aws, "AWS access key"),
        "d.yml": (binance, "long secret"),
        "deploy/.env": ("REDIS_URL=redis://x\n", ".env file"),
        "ingest.env.example": ("BINANCE_USDM_SECRET=abc\n", ".env file"),
    }
    for name, (text, kind) in cases.items():
        found = scan.scan_text(name, text)
        assert found and kind in found[0][1], (name, found)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    problems = scan.scan(tmp_path, list(cases))
    assert len(problems) == len(cases)
    assert not any("ABCDEFGHIJKLMNOP" in p for p in problems), "findings never show the secret"
    # not findings: empty values in an example, hashes and words, a documented public example
    assert scan.scan_text("ingest.env.example", "BINANCE_USDM_KEY=\nNAVSTREAM_LOG_LEVEL=INFO\n") == []
    assert scan.scan_text("x.py", 'password = "' + 'REPLACE_WITH_PASSWORD"\nsha = "' + "0" * 64 + '"\n') == []
    assert scan.scan_text("t.py", 'SECRET = "' + next(iter(scan.PUBLIC_EXAMPLES)) + '"') == []
