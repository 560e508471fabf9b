"""Running the server: in this process, or as worker processes that share its two ports.

With several workers, each one is a fresh interpreter (multiprocessing "spawn") with its own
event loop, database engine and gRPC server, all created after it starts; the parent never
creates a gRPC object. Every worker listens on the same two ports with SO_REUSEPORT (set in
``create_server``), so the kernel spreads new connections across them. The parent reports the
server ready once every worker serves, turns SIGTERM/SIGINT into a graceful stop of every
worker, and stops them all if one of them dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from wallet_server._logging import configure_logging
from wallet_server.config import Settings

if TYPE_CHECKING:  # the parent process must not import gRPC
    from sqlalchemy.ext.asyncio import AsyncEngine

    from wallet_server.transport import WalletServer

__all__ = ["OnServing", "StartupError", "WorkerError", "run_server", "serve"]

_log = logging.getLogger("wallet_server")

OnServing = Callable[[int, int], None]
"""Called with the public and the mutual-TLS port once the server serves."""

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Beyond the grace period for in-flight calls: time for a worker to close its database pool.
_STOP_MARGIN_SECONDS = 5.0


class StartupError(Exception):
    """Start-up failed for a reason the operator can fix; the message is one line."""


class WorkerError(Exception):
    """A worker process died or would not stop; the message is one line."""


def worker_count(requested: int | None, *, cores: int, per_worker: int, database_limit: int) -> int:
    """How many workers to run: ``requested``, or by default one per core as far as the
    database's connections go. Each worker may open ``per_worker`` connections at peak; a
    server that would run out refuses to start rather than fail calls under load."""
    fits = database_limit // per_worker
    if requested is None:
        if fits >= 1:
            return max(1, min(cores, fits))
        requested = 1
    if requested > fits:
        raise StartupError(
            f"{requested} worker(s) may open {requested * per_worker} database connections "
            f"({per_worker} each: database_pool_size + 1) but the database allows "
            f"{database_limit}; use fewer --workers, a smaller database_pool_size, or raise "
            "PostgreSQL's max_connections"
        )
    return requested


# The cyclic garbage collector, tuned by measurement: on a 1000-item CreateTransfers batch
# the defaults (700, 10, 10) spent about 13 % of the server's CPU in it, mostly in full
# collections walking everything start-up built (gRPC, SQLAlchemy, protobuf). Freezing that
# and collecting the young generation every 50,000 allocations brought it under 1 %; most
# objects die by reference counting long before, so a collection finds few survivors.
_GC_THRESHOLDS = (50_000, 20, 100)


def _settle_garbage_collector() -> None:
    """Once serving: what start-up built is never garbage; collect the rest less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def run_server(settings: Settings, *, workers: int, on_serving: OnServing) -> None:
    """Serve until SIGTERM/SIGINT. One worker runs in this process; more run as children."""
    _refuse_taken_ports(settings)
    if workers == 1:
        asyncio.run(serve(settings, on_serving))
    else:
        _run_workers(settings, workers, on_serving)


async def serve(
    settings: Settings,
    on_serving: OnServing,
    *,
    stop_signals: tuple[signal.Signals, ...] = _STOP_SIGNALS,
    parent: Connection | None = None,
) -> None:
    """Serve in this process until a stop signal arrives (or, in a worker, the parent is gone)."""
    from wallet_server.storage import create_engine

    engine = create_engine(settings.database_url, pool_size=settings.database_pool_size)
    try:
        server, public, mtls = _bind(settings, engine)
        await server.start()
        _settle_garbage_collector()
        stop = _stop_event(stop_signals, parent)
        await asyncio.to_thread(on_serving, public, mtls)
        _log.info(
            json.dumps({"event": "serving", "port": public, "mtls_port": mtls, "pid": os.getpid()})
        )
        await stop.wait()
        _log.info(
            json.dumps(
                {
                    "event": "stopping",
                    "pid": os.getpid(),
                    "grace_seconds": settings.shutdown_grace_seconds,
                }
            )
        )
        await server.stop(settings.shutdown_grace_seconds)
    finally:
        await engine.dispose()


def _bind(settings: Settings, engine: AsyncEngine) -> tuple[WalletServer, int, int]:
    from wallet_server.transport import create_server

    try:
        server, ports = create_server(settings, engine)
    except (OSError, RuntimeError) as exc:
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port} / "
            f"{settings.effective_mtls_host}:{settings.mtls_port} ({exc}); "
            "is another server running? choose other ports with --port/--mtls-port"
        ) from None
    return server, ports.public, ports.mtls


def _stop_event(signals: tuple[signal.Signals, ...], parent: Connection | None) -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    if parent is not None:
        fd = parent.fileno()

        def parent_gone() -> None:
            loop.remove_reader(fd)
            stop.set()

        # The parent never writes to a worker: readable means end of file, the parent died.
        loop.add_reader(fd, parent_gone)
    return stop


# --- the worker process ----------------------------------------------------------------------


def _worker_main(settings: Settings, parent: Connection) -> None:
    """A worker's entry point, run in the spawned process."""
    configure_logging(settings.log_level)

    def report(public: int, mtls: int) -> None:
        with contextlib.suppress(OSError):  # a parent already gone is noticed by ``serve``
            parent.send(("serving", public, mtls))

    try:
        # SIGINT stays ignored: the parent turns Ctrl-C into a SIGTERM for each worker.
        asyncio.run(serve(settings, report, stop_signals=(signal.SIGTERM,), parent=parent))
    except StartupError as exc:
        with contextlib.suppress(OSError):
            parent.send(("failed", str(exc)))
        sys.exit(2)


# --- the parent ------------------------------------------------------------------------------


@dataclass
class _Worker:
    number: int
    process: BaseProcess
    control: Connection  # the parent's end; the worker sends ("serving", ...) or ("failed", ...)
    serving: bool = False

    @property
    def name(self) -> str:
        return f"worker {self.number} (pid {self.process.pid})"

    def exit_reason(self) -> str:
        code = self.process.exitcode
        if code is None:
            return f"{self.name} closed its connection to the parent"
        if code < 0:
            return f"{self.name} was killed by {_signal_name(-code)}"
        return f"{self.name} exited with status {code}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _StopSignals:
    """SIGTERM/SIGINT noted, and made visible to ``wait`` as a readable socket."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self._reader, self._writer = socket.socketpair()
        self._previous_fd = -1
        self._previous: dict[signal.Signals, Any] = {}

    def fileno(self) -> int:
        return self._reader.fileno()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def __enter__(self) -> _StopSignals:
        for sock in (self._reader, self._writer):
            sock.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, self._note) for sig in _STOP_SIGNALS}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Children started in here ignore SIGINT (an ignored signal stays ignored across exec).

    Ctrl-C in a terminal signals the whole process group; only the parent acts on it and stops
    each worker with SIGTERM, so no worker dies half-way through start-up with a traceback.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_workers(settings: Settings, count: int, on_serving: OnServing) -> None:
    with contextlib.ExitStack() as stack:
        settings = _with_reserved_ports(settings, stack)
        stop = stack.enter_context(_StopSignals())
        workers: list[_Worker] = []
        try:
            _spawn(settings, count, workers)
            if _wait_until_serving(workers, stop):
                on_serving(settings.port, settings.mtls_port)
                _log.info(
                    json.dumps(
                        {
                            "event": "workers serving",
                            "port": settings.port,
                            "mtls_port": settings.mtls_port,
                            "pids": [w.process.pid for w in workers],
                        }
                    )
                )
                _wait_until_stop_or_death(workers, stop)
        except BaseException:
            _stop(workers, settings.shutdown_grace_seconds)
            raise
        problems = _stop(workers, settings.shutdown_grace_seconds)
        if problems:
            raise WorkerError("; ".join(problems))


def _refuse_taken_ports(settings: Settings) -> None:
    """Fail when a fixed port already has a listener.

    The server binds with SO_REUSEPORT (so that workers share the ports), and the kernel lets
    any other socket that also sets it, such as a second wallet server, share the port
    silently. A probe without SO_REUSEPORT is refused while anything listens there.
    """
    for host, port in (
        (settings.host, settings.port),
        (settings.effective_mtls_host, settings.mtls_port),
    ):
        if port == 0:
            continue
        try:
            # Connections of an earlier run in TIME_WAIT must not count as taken.
            _bound_socket(host, port, socket.SO_REUSEADDR).close()
        except OSError as exc:
            raise StartupError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "is another server running? choose other ports with --port/--mtls-port"
            ) from None


def _with_reserved_ports(settings: Settings, stack: contextlib.ExitStack) -> Settings:
    """The settings with port 0 replaced by a concrete free port, the same for every worker.

    Workers binding port 0 on their own would each get a different port. So the parent binds
    a free port with SO_REUSEPORT, without listening (the kernel queues no connection on a
    socket that does not listen), and passes the number to the workers, which bind it too.
    The socket stays open until the parent exits, so no other program (short of one run by the
    same user that also sets SO_REUSEPORT) can take the port before the workers bind it.
    """
    port = settings.port or _reserve_port(settings.host, stack)
    mtls_port = settings.mtls_port or _reserve_port(settings.effective_mtls_host, stack)
    return dataclasses.replace(settings, port=port, mtls_port=mtls_port)


def _bound_socket(host: str, port: int, option: int) -> socket.socket:
    """A TCP socket with ``option`` set, bound (not listening) to ``host``'s first address."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _reserve_port(host: str, stack: contextlib.ExitStack) -> int:
    try:
        sock = stack.enter_context(_bound_socket(host, 0, socket.SO_REUSEPORT))
    except OSError as exc:
        raise StartupError(f"cannot find a free port on {host}: {exc}") from None
    port: int = sock.getsockname()[1]
    return port


def _spawn(settings: Settings, count: int, workers: list[_Worker]) -> None:
    """Start ``count`` workers, appending each to ``workers`` as soon as it runs."""
    context = multiprocessing.get_context("spawn")
    with _ctrl_c_ignored():
        for number in range(1, count + 1):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(settings, theirs),
                name=f"wallet-server-worker-{number}",
                daemon=True,
            )
            try:
                process.start()
            finally:
                theirs.close()
            workers.append(_Worker(number, process, ours))


def _wait_until_serving(workers: list[_Worker], stop: _StopSignals) -> bool:
    """True once every worker serves; False if a stop signal came first."""
    while not all(w.serving for w in workers):
        waiting = [w.control for w in workers if not w.serving]
        ready = wait([stop.fileno(), *waiting, *(w.process.sentinel for w in workers)])
        if stop.received is not None or stop.fileno() in ready:
            return False
        for worker in workers:
            _check_start(worker, ready)
    return True


def _check_start(worker: _Worker, ready: Collection[object]) -> None:
    """Take the worker's report if it sent one; raise if it failed or died."""
    ended = worker.process.sentinel in ready
    if not worker.serving and worker.control in ready:
        message = _message(worker)
        if message is not None and message[0] == "failed":
            raise StartupError(message[1])
        worker.serving = message is not None and message[0] == "serving"
        ended = ended or message is None  # end of file: the worker is exiting
    if ended:
        worker.process.join(_STOP_MARGIN_SECONDS)
        raise WorkerError(f"{worker.exit_reason()} during start-up; stopped the other workers")


def _message(worker: _Worker) -> tuple[Any, ...] | None:
    try:
        message: tuple[Any, ...] = worker.control.recv()
    except (EOFError, OSError):
        return None
    return message


def _wait_until_stop_or_death(workers: list[_Worker], stop: _StopSignals) -> None:
    ready = wait([stop.fileno(), *(w.process.sentinel for w in workers)])
    if stop.received is not None or stop.fileno() in ready:
        name = stop.received.name if stop.received is not None else "a signal"
        _log.info(json.dumps({"event": "stopping workers", "signal": name}))
        return
    dead = next(w for w in workers if w.process.sentinel in ready)
    dead.process.join()
    raise WorkerError(f"{dead.exit_reason()} unexpectedly; stopped the other workers")


def _stop(workers: list[_Worker], grace: float) -> list[str]:
    """SIGTERM every live worker, wait for them, SIGKILL any still running; returns problems."""
    for worker in workers:
        if worker.process.is_alive():
            worker.process.terminate()
    limit = grace + _STOP_MARGIN_SECONDS
    deadline = time.monotonic() + limit
    problems: list[str] = []
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.exitcode is None:
            worker.process.kill()
            worker.process.join()
            problems.append(f"{worker.name} did not stop within {limit:.0f} s and was killed")
        # A worker stopped by SIGTERM before it had installed its handler served nothing yet.
        elif worker.process.exitcode not in (0, -signal.SIGTERM):
            problems.append(f"{worker.exit_reason()} while stopping")
        worker.control.close()
    return problems
