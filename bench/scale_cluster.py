"""bench_scale's private Redis Cluster: three nodes on free loopback ports, no replicas, torn
down at the end; and the node that holds a hash tag's slot (where one deployment lives)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

NODES = 3


def _free_port() -> int:
    """A loopback port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        ok = True
        for p in (port, port + 10_000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise SystemExit("no free loopback port pair for a cluster node")


class LocalCluster:
    """``with LocalCluster() as c:`` three ``redis-server --cluster-enabled yes`` nodes."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workdir = ""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def __enter__(self) -> LocalCluster:
        import redis

        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if not (server and cli):
            raise SystemExit("redis-server and redis-cli are needed for the cluster runs (--backends single: none)")
        self.workdir = tempfile.mkdtemp(prefix="nsbench-cluster-")
        try:
            for _ in range(NODES):
                port = _free_port()
                self.ports.append(port)
                self.procs.append(
                    subprocess.Popen(
                        [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
                        + ["--cluster-config-file", f"nodes-{port}.conf", "--dir", self.workdir, "--save", ""]
                        + ["--appendonly", "no", "--logfile", os.path.join(self.workdir, f"{port}.log")],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for port in self.ports:
                _wait(lambda p=port: redis.Redis(port=p, socket_connect_timeout=0.2).ping())
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
                + ["--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait(lambda: redis.Redis(port=self.ports[0]).cluster("info")["cluster_state"] == "ok")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def node_of(self, tag: str) -> str:
        """The URL of the node that holds ``{tag}``'s slot."""
        import redis

        client = redis.Redis(port=self.ports[0])
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", "{" + tag + "}"))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                    return f"redis://{host}:{int(primary[1])}/0"
        finally:
            client.close()
        raise SystemExit(f"no node holds the slot of {{{tag}}}")


def _wait(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the local cluster did not come up")
        time.sleep(0.1)
