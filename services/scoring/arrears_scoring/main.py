"""``arrears-scoring``: serve, migrate, train, backtest, select-model, reage."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

import typer

from arrears_scoring.app import SERVICE, create_app
from arrears_scoring.models import SCHEMA
from arrears_scoring.settings import ScoringSettings
from arrears_shared.cli import service_cli

cli = service_cli(
    service=SERVICE,
    schema=SCHEMA,
    migrations_dir=Path(__file__).parent / "migrations",
    load_settings=ScoringSettings,
    create_app=create_app,
    port=lambda s: s.http_port,
)


@cli.command()
def train(
    csv: Path | None = typer.Option(None, help="Train on this IBM-format CSV instead of the ledger."),
    out: Path | None = typer.Option(None, help="Also write the model JSON here."),
    activate: bool = typer.Option(True, help="Store the model in the database and make it the one in use."),
) -> None:
    """Fit the late-payment model on settled invoices (the ledger's own, time-ordered) and store it."""
    from arrears_scoring.risk.commands import run_train

    model = asyncio.run(run_train(ScoringSettings(), csv, activate))
    text = json.dumps(model.as_dict(), indent=2)
    if out:
        out.write_text(text + "\n")
    metrics = dict(model.metrics.items())
    typer.echo(json.dumps({"version": model.version, "metrics": metrics}, indent=2))


@cli.command()
def backtest(
    csv: Path = typer.Option(..., exists=True, dir_okay=False, help="IBM-format CSV of settled invoices."),
    cutoff: str | None = typer.Option(None, help="Split date (YYYY-MM-DD); default: 70% of invoices by issue date."),
    plot: Path = typer.Option(Path("calibration.png"), help="Where to write the calibration plot (PNG)."),
) -> None:
    """Time-ordered backtest: fit on invoices settled before the cutoff, report AUC, Brier score and
    calibration on invoices issued after it."""
    from arrears_scoring.risk.train import BadCsv, plot_calibration, read_ibm_csv
    from arrears_scoring.risk.train import backtest as run_backtest

    try:
        records = read_ibm_csv(csv)
        split = date.fromisoformat(cutoff) if cutoff else None
        _, report = run_backtest(records, split, "backtest")
    except (BadCsv, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    plot_calibration(report, plot)
    report["plot"] = str(plot)
    typer.echo(json.dumps(report, indent=2))


@cli.command("select-model")
def select_model(
    csv: Path = typer.Option(..., exists=True, dir_okay=False, help="IBM-format CSV of settled invoices."),
    cutoff: str | None = typer.Option(None, help="Split date (YYYY-MM-DD); default: 70% of invoices by issue date."),
    validation_only: bool = typer.Option(
        False, "--validation-only", help="Report the validation inside the training period only; no test score."
    ),
) -> None:
    """Model selection by time-ordered validation inside the training period only (fixed candidate
    space; docs/scoring.md "Model selection"); the winner alone is scored on the test period."""
    from arrears_scoring.risk.selection import select
    from arrears_scoring.risk.train import BadCsv, read_ibm_csv

    try:
        records = read_ibm_csv(csv)
        report = select(records, date.fromisoformat(cutoff) if cutoff else None, score_test=not validation_only)
    except (BadCsv, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report, indent=2))


@cli.command()
def reage() -> None:
    """Re-age now: publish the accounts whose bucket, level-relevant age or risk tier changed."""
    from arrears_scoring.risk.commands import run_reage

    typer.echo(f"published {asyncio.run(run_reage(ScoringSettings()))} accounts")


if __name__ == "__main__":
    cli()
