"""``arrears-cases``: the case manager's service commands plus ``policy check|simulate`` and ``keys create``."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from arrears_case_manager.auth import SCOPES, KeyService
from arrears_case_manager.main import cli as service_cli
from arrears_case_manager.models import accounts
from arrears_case_manager.policy.models import PolicyError, load_policy
from arrears_case_manager.policy.simulate import simulate
from arrears_case_manager.settings import CaseSettings
from arrears_shared.clock import make_clock
from arrears_shared.events.v1 import AccountUpdated
from arrears_shared.settings import async_database_url

cli = service_cli
policy_cli = typer.Typer(help="Escalation policies.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys.", no_args_is_help=True)
cli.add_typer(policy_cli, name="policy")
cli.add_typer(keys_cli, name="keys")


@policy_cli.command("check")
def policy_check(file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True)) -> None:
    """Validate a policy file; a bad one is refused with the line and field of each problem."""
    try:
        policy = load_policy(str(file))
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    variants = ", ".join(v.name for v in policy.variants) or "none"
    typer.echo(
        f"{file}: ok: policy {policy.name!r} v{policy.version}, {len(policy.levels)} levels, variants: {variants}"
    )


async def _account_state(settings: CaseSettings, account_id: str) -> dict[str, Any] | None:
    engine = create_async_engine(async_database_url(settings.database_url))
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(select(accounts.c.state).where(accounts.c.account_id == account_id))).first()
            return dict(row.state) if row else None
    finally:
        await engine.dispose()


@policy_cli.command("simulate")
def policy_simulate(
    account: str | None = typer.Option(None, "--account", help="An account id known to the case manager's database."),
    state: Path | None = typer.Option(None, "--state", help="Or: a JSON file holding an ar.account.updated payload."),
    policy_file: Path | None = typer.Option(None, "--policy", help="Policy file (default: the configured one)."),
    today: str | None = typer.Option(None, "--today", help="Simulate as of this date (YYYY-MM-DD)."),
) -> None:
    """Which step would fire on which day for an account, and why."""
    settings = CaseSettings()
    try:
        policy = load_policy(str(policy_file) if policy_file else settings.policy_file)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if state is not None:
        raw = json.loads(state.read_text())
    elif account is not None:
        found = asyncio.run(_account_state(settings, account))
        if found is None:
            typer.echo(f"no account {account!r} in the case manager's database", err=True)
            raise typer.Exit(1)
        raw = found
    else:
        typer.echo("give --account ID or --state FILE", err=True)
        raise typer.Exit(2)
    day = date.fromisoformat(today) if today else make_clock(settings.clock_file).now().date()
    typer.echo(json.dumps(simulate(policy, AccountUpdated.model_validate(raw), day), indent=2))


@keys_cli.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="What the key is for (a tool or team; not a secret)."),
    scope: list[str] = typer.Option(["cases:read"], "--scope", help=f"Repeat for several: {', '.join(SCOPES)}."),
) -> None:
    """Create an API key; the token is printed once and only its hash is stored."""
    settings = CaseSettings()

    async def create() -> tuple[str, str]:
        engine = create_async_engine(async_database_url(settings.database_url))
        try:
            async with AsyncSession(engine) as session, session.begin():
                return await KeyService().create(session, name, scope, make_clock(settings.clock_file).now())
        finally:
            await engine.dispose()

    try:
        key_id, token = asyncio.run(create())
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"key_id": key_id, "token": token, "scopes": sorted(set(scope))}))


@keys_cli.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key_id printed by keys create.")) -> None:
    """Revoke an API key; requests with it are refused (401) from now on."""
    settings = CaseSettings()

    async def revoke() -> bool:
        engine = create_async_engine(async_database_url(settings.database_url))
        try:
            async with AsyncSession(engine) as session, session.begin():
                return await KeyService().revoke(session, key_id, make_clock(settings.clock_file).now())
        finally:
            await engine.dispose()

    if not asyncio.run(revoke()):
        typer.echo(f"no active key {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


if __name__ == "__main__":
    cli()
