"""``arrears``: run the whole of Arrears on one machine (``up``, ``down``, ``status``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from arrears_dev.stack import (
    SERVICES,
    EmbeddedPostgres,
    StackPorts,
    create_topics,
    migrate_all,
    service_env,
    start_broker,
    start_services,
    start_sinks,
    stop_process,
)

app = typer.Typer(
    help="Run Arrears locally: broker, database, mail and SMS sinks, and the four services.",
    no_args_is_help=True,
    add_completion=False,
)

VAR = Path(os.environ.get("ARREARS_VAR_DIR", "var"))
STATE = VAR / "run" / "stack.json"


def _save_state(state: dict[str, object]) -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_text(json.dumps(state, indent=2))


@app.command()
def up(detach: bool = typer.Option(False, "--detach", "-d", help="Start in the background and return.")) -> None:
    """Start everything; Ctrl-C (or `arrears down`) stops all of it."""
    if STATE.exists():
        typer.echo("Arrears seems to be running already (see `arrears status`; `arrears down` stops it).", err=True)
        raise typer.Exit(1)
    ports = StackPorts(smtp_api=8027)
    VAR.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    pg: EmbeddedPostgres | None = None
    try:
        typer.echo(f"broker     Tansu (memory) on 127.0.0.1:{ports.broker}")
        procs.append(start_broker(ports.broker, VAR / "log" / "broker.log"))
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            typer.echo("database   $DATABASE_URL")
        else:
            pg = EmbeddedPostgres(VAR.resolve() / "postgres", int(os.environ.get("ARREARS_DEV_PG_PORT", "5433")))
            database_url = pg.start()
            typer.echo(f"database   embedded PostgreSQL on 127.0.0.1:{pg.port} (data in {VAR / 'postgres'})")
        procs.extend(start_sinks(ports, VAR))
        typer.echo(
            f"smtp sink  127.0.0.1:{ports.smtp} (messages in {VAR / 'mail'}; "
            f"search http://127.0.0.1:{ports.smtp_api}/api/v1/search?query=message-id:<id>)"
        )
        typer.echo(f"sms sink   http://127.0.0.1:{ports.sms}/messages (Twilio-compatible API)")
        env = service_env(database_url, ports)
        migrate_all(env)
        cases_key = create_dev_cases_key(env)
        created = create_topics(f"127.0.0.1:{ports.broker}")
        typer.echo(f"topics     {len(created)} created")
        services = start_services(env, ports, VAR / "log")
        procs.extend(services.values())
        for name, _, _ in SERVICES:
            typer.echo(f"{name:<10} http://127.0.0.1:{getattr(ports, name)}  (docs at /docs)")
        _save_state(
            {
                "pids": [p.pid for p in procs],
                "postgres": str(pg.data_dir) if pg else None,
                "ports": ports.__dict__,
            }
        )
        typer.echo(f"logs       {VAR / 'log'}")
        typer.echo(f"case API   bearer key for local use (all scopes): {cases_key}")
        (VAR / "run").mkdir(parents=True, exist_ok=True)
        (VAR / "run" / "cases-key").write_text(cases_key + "\n")
    except BaseException:
        for proc in reversed(procs):
            stop_process(proc)
        if pg:
            pg.stop()
        STATE.unlink(missing_ok=True)
        raise
    if detach:
        typer.echo("running in the background; `arrears down` stops it")
        return
    typer.echo("Arrears is up. Ctrl-C stops it.")
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            typer.echo(f"a process exited (pid {dead[0].pid}, code {dead[0].returncode}); stopping", err=True)
            break
        time.sleep(0.5)
    typer.echo("stopping...")
    for proc in reversed(procs):
        stop_process(proc)
    if pg:
        pg.stop()
    STATE.unlink(missing_ok=True)
    typer.echo("stopped")


def create_dev_cases_key(env: dict[str, str]) -> str:
    """A case-manager API key with every scope, for the local stack only (printed and kept in var/run)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "arrears_case_manager.cli",
            "keys",
            "create",
            "--name",
            "local-dev-stack",
            "--scope",
            "cases:read",
            "--scope",
            "cases:write",
            "--scope",
            "admin",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token: str = json.loads(out.stdout)["token"]
    return token


@app.command()
def down() -> None:
    """Stop a stack started with `arrears up --detach`."""
    if not STATE.exists():
        typer.echo("Arrears is not running")
        return
    state = json.loads(STATE.read_text())
    for pid in reversed(state["pids"]):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    if state.get("postgres"):
        EmbeddedPostgres(Path(state["postgres"]), 0).stop()
    STATE.unlink(missing_ok=True)
    typer.echo("stopped")


@app.command()
def status() -> None:
    """Show what is running and whether each service is ready."""
    if not STATE.exists():
        typer.echo("Arrears is not running")
        raise typer.Exit(1)
    ports = json.loads(STATE.read_text())["ports"]
    ok = True
    for name, _, _ in SERVICES:
        try:
            r = httpx.get(f"http://127.0.0.1:{ports[name]}/readyz", timeout=3)
            line = f"{r.status_code} {r.json().get('checks')}"
            ok = ok and r.status_code == 200
        except httpx.HTTPError as exc:
            line = f"unreachable ({type(exc).__name__})"
            ok = False
        typer.echo(f"{name:<12} :{ports[name]}  {line}")
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app(sys.argv[1:])
