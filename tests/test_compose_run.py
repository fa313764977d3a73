"""tools/compose_run.py: docker-compose.yml's services as `docker run` arguments (.ci/image.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support import ROOT

sys.path.insert(0, str(ROOT / "tools"))

import compose_run


def _args(service: str, **kw: object) -> tuple[list[str], list[str]]:
    options = {"image": "navstream:ci", "name": "c1", "hostname": None, "env_overrides": {}, "volumes": {}}
    options.update(kw)
    return compose_run.run_args(ROOT / "docker-compose.yml", service, **options)  # type: ignore[arg-type]


def test_durations() -> None:
    assert compose_run.seconds("30s") == 30
    assert compose_run.seconds("1m30s") == 90
    assert compose_run.seconds("500ms") == 0.5
    assert compose_run.docker_duration("15s") == "15000ms"
    with pytest.raises(compose_run.ComposeError):
        compose_run.seconds("30 seconds")


def test_the_consumer_service_as_compose_describes_it() -> None:
    args, notes = _args(
        "consumer",
        hostname="h1",
        env_overrides={"NAVSTREAM_HTTP_PORT": "18080"},
        volumes={"navstream-state": "ci-state"},
    )
    joined = " ".join(args)
    assert args[:4] == ["--name", "c1", "--network", "host"]
    for expected in (
        "--read-only",
        "--tmpfs /tmp",
        "--cap-drop ALL",
        "--security-opt no-new-privileges:true",
        "--stop-signal SIGTERM",
        "--stop-timeout 30",
        "--hostname h1",
        "-e NAVSTREAM_HTTP_PORT=18080",
        "-v ci-state:/var/lib/navstream",
        f"-v {ROOT / 'config'}:/etc/navstream:ro",
    ):
        assert expected in joined
    assert "-e NAVSTREAM_HTTP_PORT=8080" not in joined  # overridden, not doubled
    assert args[-2:] == ["navstream:ci", "run"]
    assert any("NAVSTREAM_HTTP_PORT=18080 (compose: 8080)" in n for n in notes)


def test_ingest_has_its_own_healthcheck_in_shell_form() -> None:
    args, _ = _args("ingest", volumes={"./config": "/tmp/ci-config"})
    cmd = args[args.index("--health-cmd") + 1]
    assert cmd.startswith("/opt/venv/bin/python -c ") and "NAVSTREAM_INGEST_HTTP_PORT" in cmd
    assert "-v /tmp/ci-config:/etc/navstream:ro" in " ".join(args)
    assert args[-1] == "ingest"


def test_a_named_volume_is_never_the_deployments() -> None:
    with pytest.raises(compose_run.ComposeError, match="navstream-state"):
        _args("consumer")


def test_an_unknown_key_is_an_error_not_skipped(tmp_path: Path) -> None:
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  s:\n    image: x\n    ulimits: {nofile: 1024}\n")
    with pytest.raises(compose_run.ComposeError, match="ulimits"):
        compose_run.run_args(compose, "s", image="i", name="n", hostname=None, env_overrides={}, volumes={})


@pytest.mark.parametrize("role", ["orders", "events"])
def test_the_split_consumers_are_the_consumer_service_in_a_role(role: str) -> None:
    """`consumer-orders` and `consumer-events` (profile `split`, docs/deployment.md) run as
    `consumer` does, with `--role`; their profile is a note, not an error."""
    options = {"hostname": "h1", "volumes": {"navstream-state": "ci-state"}}
    args, notes = _args(f"consumer-{role}", **options)
    base, _ = _args("consumer", **options)
    assert args[-4:] == ["navstream:ci", "run", "--role", role]
    assert args[:-3] == base[:-1]  # the same hardening, environment, mounts, stop and health
    assert any(n.startswith("not applied: profiles") for n in notes)
