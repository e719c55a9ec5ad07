"""``arrears-ingest keys create|list|revoke``: manage per-source API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from arrears_ingest.auth.service import ApiKeyService, CreatedKey
from arrears_ingest.settings import IngestSettings
from arrears_shared.clock import make_clock
from arrears_shared.db import make_engine, make_sessionmaker

T = TypeVar("T")
keys_cli = typer.Typer(help="Per-source API keys (only a hash of each key is stored).", no_args_is_help=True)


def _run(work: Callable[[AsyncSession, IngestSettings], Awaitable[T]]) -> T:
    settings = IngestSettings()

    async def go() -> T:
        engine = make_engine(settings.database_url, pool_size=1, application_name="arrears-ingest-keys")
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await work(session, settings)
        finally:
            await engine.dispose()

    return asyncio.run(go())


@keys_cli.command("create")
def create(
    source: str = typer.Option(..., help="The CloudEvents source this key may send (and sources below it)."),
    name: str = typer.Option(..., help="Who holds the key, for the list."),
    signing: bool = typer.Option(False, help="Also create a webhook signing secret and require signatures."),
) -> None:
    """Create a key. It is shown once: only its hash is kept."""

    async def work(session: AsyncSession, settings: IngestSettings) -> CreatedKey:
        return await ApiKeyService().create(
            session, source=source, name=name, signing=signing, at=make_clock(settings.clock_file).now()
        )

    key = _run(work)
    typer.echo(f"key_id: {key.key_id}")
    typer.echo(f"source: {key.source}")
    typer.echo(f"api_key: {key.api_key}")
    if key.signing_secret:
        typer.echo(f"signing_secret: {key.signing_secret}")
    typer.echo("Store these now: they cannot be shown again.", err=True)


@keys_cli.command("list")
def list_keys() -> None:
    """List keys (ids, sources, names; never secrets)."""

    async def work(session: AsyncSession, settings: IngestSettings) -> list[dict[str, object]]:
        return await ApiKeyService().list(session)

    for row in _run(work):
        state = "revoked" if row["revoked_at"] else "active"
        signed = " signed" if row["signed"] else ""
        typer.echo(f"{row['key_id']}\t{row['source']}\t{row['name']}\t{state}{signed}")


@keys_cli.command("revoke")
def revoke(key_id: str) -> None:
    """Revoke a key: requests with it get 401 from now on."""

    async def work(session: AsyncSession, settings: IngestSettings) -> bool:
        return await ApiKeyService().revoke(session, key_id, make_clock(settings.clock_file).now())

    if not _run(work):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
