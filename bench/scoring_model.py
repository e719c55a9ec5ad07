"""The late-payment model on the IBM "Accounts Receivable" sample (../shared/data/ar), time-ordered:
fitted on invoices settled before the cutoff, tested on invoices issued on or after it, with every
feature computed from what was known when each invoice was issued (plus, in the main figure, the
invoice's dispute status, which scoring knows while the invoice is open).

    python -m bench.scoring_model [--cutoff YYYY-MM-DD] [--plot docs/scoring_calibration.png]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

from arrears_scoring.risk.train import backtest, plot_calibration, read_ibm_csv

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ar" / "WA_Fn-UseC_-Accounts-Receivable.csv"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scoring_model")
    parser.add_argument("--cutoff", default=None)
    parser.add_argument("--plot", default="var/scoring_calibration.png")
    args, _ = parser.parse_known_args()
    if not DATA.exists():
        print(f"skipped: {DATA.name} is not in ../shared/data/ar")
        return
    print(f"load: {os.getloadavg()}")
    t0 = time.perf_counter()
    records = read_ibm_csv(DATA)
    _, report = backtest(records, date.fromisoformat(args.cutoff) if args.cutoff else None, "bench")
    elapsed = time.perf_counter() - t0
    plot = Path(args.plot)
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_calibration(report, plot)
    summary = {k: v for k, v in report.items() if k != "calibration"}
    print(json.dumps(summary, indent=2))
    print("calibration (predicted → observed, n):")
    for c in report["calibration"]:
        span = f"{c['bin_low']:.1f}-{c['bin_high']:.1f}"
        print(f"  {span}: {c['mean_predicted']:.3f} → {c['observed_late']:.3f} ({c['count']})")
    print(f"plot: {plot}; features, fit and test in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
