"""Estimate the whole benchmark's CPU and wall time (search + seeds, every table) under the CPU protocol.

Inputs: each row's CPU seconds per epoch, validation included, from its run records (``results/runs/cpu``, made
under the earlier 20-epoch protocol at the same data, widths and batch sizes); a row without records takes
``--per-epoch ROW=SECONDS``. Epochs a converged run needs: its records' best epoch where they stopped by patience,
else ``--converged-best`` (the best epoch a cap-bound row is assumed to reach), plus ``stopping_step + 1``
validations without improvement. Search: the protocol's trials under ASHA (grace period g, reduction factor r:
every trial runs g epochs, 1/r of them continue to g r, ..., none past the converged run's length).

    python bench/benchmark_cost.py [--jobs 2] [--converged-best 30] [--scale PMMRec=0.12]
"""

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_mm.results.protocols import ROOT, load_protocol  # noqa: E402
from recbole_mm.results.search import search_options, space_of  # noqa: E402
from recbole_mm.results.tables import TABLES  # noqa: E402


def recorded(runs_dir: str):
    """``{(table, row): [(cpu seconds per epoch, best epoch, epochs run, cap)]}`` from the records."""
    out = defaultdict(list)
    for path in glob.glob(os.path.join(runs_dir, "*", "*.json")):
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        s = r["spec"]
        epochs = r.get("epochs_run") or s["settings"].get("pretrain_epochs") or 1
        out[s["table"], s["row"]].append((r["cpu_seconds"] / epochs, r.get("best_epoch"), epochs, s["settings"]))
    return out


def asha_epochs(trials: int, grace: int, factor: int, length: int) -> int:
    """Epochs of a search: trials at each rung shrink by ``factor``; no trial runs past ``length`` epochs."""
    total, alive, done, rung = 0, trials, 0, grace
    while alive >= 1 and done < length:
        step = min(rung, length) - done
        total += alive * step
        done, alive, rung = min(rung, length), alive // factor, rung * factor
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--converged-best", type=int, default=30, help="best epoch assumed for a cap-bound row")
    parser.add_argument("--scale", nargs="*", default=[], help="MODEL=FACTOR on the recorded epoch cost")
    parser.add_argument("--per-epoch", nargs="*", default=[], help="ROW=SECONDS for rows without records")
    parser.add_argument("--grace", type=int, help="ASHA grace period instead of the protocol's")
    parser.add_argument("--no-search", nargs="*", default=[], help="rows (labels) whose search is not run")
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "results", "runs", "cpu"))
    args = parser.parse_args(argv)
    protocol = load_protocol("cpu")
    scale = {k: float(v) for k, v in (s.split("=") for s in args.scale)}
    fallback = {k: float(v) for k, v in (s.split("=") for s in args.per_epoch)}
    records = recorded(args.runs_dir)
    search = search_options(protocol)
    if args.grace:
        search["grace_period"] = args.grace
    patience = int(protocol.settings["stopping_step"])
    seeds = len(protocol.seeds)
    total_cpu, rows_out = 0.0, []
    print("| table | row | CPU s / epoch | epochs / run | search epochs | CPU h (search + seeds) |")
    print("|---|---|---|---|---|---|")
    for table in TABLES.values():
        for row in table.rows:
            recs = records.get((table.name, row.label), [])
            if recs:
                per_epoch = sum(r[0] for r in recs) / len(recs)
            elif row.label in fallback:
                per_epoch = fallback[row.label]
            else:
                print(f"| {table.name} | {row.label} | no records | | | |")
                continue
            per_epoch *= scale.get(row.model, 1.0)
            if row.model == "Pop":  # nothing to train: one epoch (the count), no search
                epochs, search_epochs = 1, 0
            elif row.stage == "pretrain":
                epochs = protocol.pretrain_settings.get("pretrain_epochs") or _preset(row)
                search_epochs = 0
            else:
                bests = []
                for _, best, run, settings in recs:
                    capped = best is None or run >= int(settings.get("epochs", 300)) or run - 1 - best < patience
                    bests.append(args.converged_best if capped else best)
                best = max(bests) if bests else args.converged_best
                epochs = min(best + 1 + patience + 1, int(protocol.settings["epochs"]))
                search_epochs = 0
                if space_of(row) and not row.tuned_from and row.label not in args.no_search:
                    search_epochs = asha_epochs(search["trials"], search["grace_period"],
                                                search["reduction_factor"], epochs)
            cpu = per_epoch * (seeds * epochs + search_epochs)
            total_cpu += cpu
            rows_out.append(cpu)
            print(f"| {table.name} | {row.label} | {per_epoch:.1f} | {epochs} | {search_epochs} | {cpu / 3600:.2f} |")
    print(f"\nTotal: {total_cpu / 3600:.1f} h of CPU; wall with --jobs {args.jobs} (runs spread evenly, one thread "
          f"each): {total_cpu / 3600 / args.jobs:.1f} h")
    return 0


def _preset(row) -> int:
    from recbole_mm.results.runner import preset_value

    return int(preset_value(row, "pretrain_epochs") or 0)


if __name__ == "__main__":
    sys.exit(main())
