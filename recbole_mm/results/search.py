"""The search stage of a results table: before a row's seeds run, a small Ray Tune search on validation.

Every searched row gets the same budget (the protocol's ``search``: trials, ASHA settings, seed): the learning rate
and the knobs of :data:`recbole_mm.results.tables.KNOBS` for its model, sampled at random (seed ``seed``), each trial
trained under the row's own settings (the protocol's epoch cap and patience), pruned by ASHA on valid NDCG@10. The
winner's values are recorded in ``<runs_dir>/<protocol>/<table>/search/<row slug>.json`` and every seed of the row
then runs at them (they are part of its run specification). A recorded search with the same specification is not
run again; searches are claimed like runs (:mod:`recbole_mm.results.claims`).
"""

import json
import os
import sys
import time
from datetime import datetime, timezone
from typing import Dict, List, Optional

import yaml

from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.results.protocols import ROOT, SEARCH_DEFAULTS
from recbole_mm.results.tables import KNOBS, LEARNING_RATE, Row


def search_options(protocol) -> Optional[Dict]:
    """The protocol's search settings with defaults filled in; None when the protocol has no search stage."""
    if not protocol.search:
        return None
    return {**SEARCH_DEFAULTS, **protocol.search}


def space_of(row: Row) -> Dict[str, Dict]:
    """The search space of ``row`` (YAML form of :mod:`recbole_mm.tuning.space`); empty for a row with nothing to
    tune (Pop, a pre-training) or whose model the protocol leaves out."""
    if row.stage == "pretrain" or row.model not in KNOBS:
        return {}
    space = {"learning_rate": dict(LEARNING_RATE)}
    for key, values in KNOBS[row.model].items():
        if key not in row.overrides:  # a row that pins a knob is about that value
            space[key] = {"type": "choice", "values": list(values)}
    return space


def searched(plan, row: Row) -> bool:
    """Whether ``row`` has a search stage of its own (a row ``tuned_from`` another runs at that row's values)."""
    options = search_options(plan.protocol)
    return bool(
        options
        and not row.tuned_from
        and space_of(row)
        and (options["models"] is None or row.model in options["models"])
    )


def search_spec(plan, row: Row) -> Dict:
    """What defines a row's search: the run specification of its search seed without the tuned values, the space
    and the budget."""
    options = search_options(plan.protocol)
    spec = plan.spec(row, options["seed"], tuned=False)
    spec.update(
        space=space_of(row),
        budget={k: options[k] for k in ("trials", "seed", "grace_period", "reduction_factor")},
        scheduler="asha",
        tool="ray",
    )
    return json.loads(json.dumps(spec))


def search_path(plan, row: Row) -> str:
    from recbole_mm.results.tables import slug

    return os.path.join(plan.runs_dir, plan.protocol.name, plan.table.name, "search", f"{slug(row.label)}.json")


def read_search(plan, row: Row) -> Optional[Dict]:
    """The recorded search of ``row`` when it holds the current search specification, else None."""
    path = search_path(plan, row)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    return record if record.get("spec") == search_spec(plan, row) else None


def run_search(plan, row: Row, pretrained: Optional[str], address: Optional[str] = None, log=print) -> Dict:
    """Run ``row``'s search with the sweep tool and write its record; the record."""
    from recbole_mm.errors import RunError
    from recbole_mm.results.tables import slug
    from recbole_mm.tuning.sweep import SweepOptions, run_sweep

    options = search_options(plan.protocol)
    spec = search_spec(plan, row)
    folder = os.path.join(plan.work_dir, "search", plan.protocol.name, plan.table.name, slug(row.label))
    os.makedirs(folder, exist_ok=True)
    space_file = os.path.join(folder, "space.yaml")
    with atomic_write(space_file) as f:
        yaml.safe_dump(spec["space"], f)
    overrides = {k: v for k, v in spec["settings"].items() if k not in spec["space"]}
    locations = plan.locations(row, options["seed"])
    overrides.update(data_path=locations["data_path"], gpu_id=locations["gpu_id"])
    if pretrained:
        overrides["pretrained_path"] = pretrained
    sweep = SweepOptions(
        tool="ray",
        search="random",
        num_samples=options["trials"],
        scheduler="asha",
        max_concurrent=0,
        address=address,
        grace_period=options["grace_period"],
        reduction_factor=options["reduction_factor"],
    )
    log(f"[{plan.table.name}] {row.label}: search, {options['trials']} trials over {sorted(spec['space'])}")
    argv, wall = sys.argv, time.time()
    sys.argv = argv[:1]  # RecBole's Config reads --key=value from the command line: keep the runner's out
    # Ctrl-C stops the runner (KeyboardInterrupt), not only the search: Ray Tune's own handler would end the search
    # quietly and let the runner go on to the next row
    handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        result = run_sweep(
            row.model, spec["dataset"], space_file, [os.path.join(ROOT, f) for f in row.config_files], overrides,
            sweep, os.path.join(folder, time.strftime("%Y%m%d-%H%M%S")),
        )
    finally:
        sys.argv = argv
        if handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = handler
    if result.best is None:
        raise RunError(f"table {plan.table.name!r}, row {row.label!r}: no search trial completed; see {folder}")
    from recbole_mm.tuning.space import cast_params, load_search_space

    space = load_search_space(space_file)
    record = {
        "spec": spec,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "chosen": cast_params(space, result.best.params),
        "best_valid_score": result.best.best_valid_score,
        "wall_seconds": round(time.time() - wall, 2),
        "trials": [
            {
                "params": cast_params(space, t.params),
                "status": t.status,
                "best_valid_score": t.best_valid_score,
                "epochs_run": t.epochs_run,
                "peak_rss_mb": t.peak_rss_mb,
            }
            for t in result.records
        ],
        "sweep_dir": os.path.dirname(result.files["summary"]),
    }
    path = search_path(plan, row)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path) as f:
        json.dump(record, f, indent=1)
    log(f"[{plan.table.name}] {row.label}: search chose {record['chosen']} (valid {record['best_valid_score']:.4f})")
    return record


def search_lines(plan, rows: List[Row]) -> List[str]:
    """Markdown under a table: the search budget, each row's space and chosen values."""
    options = search_options(plan.protocol)
    inherit = [r for r in rows if r.tuned_from and searched(plan, plan.table.row(r.tuned_from))]
    rows = [r for r in rows if searched(plan, r)]
    if not options or not rows:
        return []
    lines = [
        "## Tuned settings",
        "",
        f"Before its seeds run, every row below was searched on validation (valid NDCG@10) with the sweep tool: Ray "
        f"Tune, {options['trials']} random trials (seed {options['seed']}), ASHA (grace period "
        f"{options['grace_period']} epochs, reduction factor {options['reduction_factor']}), each trial under the "
        "row's settings above; seeds then run at the chosen values. Learning rate: log-uniform "
        f"{LEARNING_RATE['low']:g} to {LEARNING_RATE['high']:g}.",
        "",
        "| row | searched | chosen | valid NDCG@10 | trials completed / stopped / failed | peak trial RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        record = read_search(plan, row)
        space = ", ".join(
            k if v["type"] != "choice" else f"{k} in {v['values']}" for k, v in space_of(row).items()
        )
        if record is None:
            lines.append(f"| {row.label} | {space} | not yet searched | | | |")
            continue
        chosen = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in record["chosen"].items())
        counts = [sum(t["status"] == s for t in record["trials"]) for s in ("completed", "stopped", "error")]
        peaks = [t["peak_rss_mb"] for t in record["trials"] if t.get("peak_rss_mb")]
        lines.append(
            f"| {row.label} | {space} | {chosen} | {record['best_valid_score']:.4f} | "
            f"{' / '.join(map(str, counts))} | {f'{max(peaks):.0f}' if peaks else ''} |"
        )
    for row in inherit:
        lines.append(f"| {row.label} | runs at the values chosen for {row.tuned_from} | | | | |")
    return lines + [""]
