"""Sweep results: choose the winner on validation, then write the trial table (CSV and markdown), the
winner's configuration as a YAML for ``run_recbole_mm.py --config_files``, a PNG of the validation
metric per epoch per trial, and ``summary.json``. Every file is written atomically.
"""

import csv
import json
import os
from typing import Dict, List, Optional

import yaml

from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.tuning.space import cast_params
from recbole_mm.tuning.trial import COMPLETED, ERROR, STOPPED, SweepSetup, TrialRecord

OUTPUT_FILES = {
    "csv": "trials.csv",
    "markdown": "trials.md",
    "best_config": "best_config.yaml",
    "plot": "valid_curves.png",
    "summary": "summary.json",
}


def select_best(records: List[TrialRecord], bigger: bool) -> Optional[TrialRecord]:
    """The completed trial with the best validation score (the first on ties); None if none completed.

    Only completed trials compete: they ran to their end and their best checkpoint was tested.
    Test metrics play no part in the choice.
    """
    completed = [r for r in records if r.status == COMPLETED and r.best_valid_score is not None]
    if not completed:
        return None
    sign = 1.0 if bigger else -1.0
    return max(completed, key=lambda r: sign * r.best_valid_score)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _rows(setup: SweepSetup, records: List[TrialRecord]) -> List[Dict[str, str]]:
    score_column = f"best valid {setup.valid_metric}"
    rows = []
    for r in records:
        row = {"trial": r.trial_id}
        row.update({p.name: _cell(r.params.get(p.name)) for p in setup.space})
        row.update({score_column: _cell(r.best_valid_score), "epochs run": str(r.epochs_run), "status": r.status})
        row["peak RSS MiB"] = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else ""
        row["error"] = r.error.splitlines()[0] if r.error else ""
        rows.append(row)
    return rows


def write_csv(path: str, rows: List[Dict[str, str]]) -> None:
    with atomic_write(path) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: List[Dict[str, str]], best_id: Optional[str]) -> str:
    """A GitHub markdown table of ``rows``; the winner's trial id in bold."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row[h].replace("|", "\\|") for h in header]
        if row["trial"] == best_id:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_config(setup: SweepSetup, best: TrialRecord) -> Dict:
    """The winner's full configuration: config files' content, fixed overrides, sampled values."""
    config = dict(setup.file_config)
    config.update(setup.fixed)
    config.update(cast_params(setup.space, best.params))
    config.update(model=setup.model, dataset=setup.dataset)
    return config


def plot_curves(path: str, setup: SweepSetup, records: List[TrialRecord], best_id: Optional[str]) -> None:
    """Validation metric per epoch, one line per trial (solid: completed, dashed: stopped, dotted: error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    styles = {COMPLETED: "-", STOPPED: "--", ERROR: ":"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in records:
        if not r.curve:
            continue
        epochs, scores = zip(*r.curve)
        label = f"{r.trial_id} ({r.status}): " + ", ".join(f"{k}={_cell(v)}" for k, v in r.params.items())
        ax.plot(
            epochs, scores, styles[r.status], marker="o", linewidth=2.5 if r.trial_id == best_id else 1.2, label=label
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"valid {setup.valid_metric}")
    ax.set_title(f"{setup.model} on {setup.dataset}: validation {setup.valid_metric} per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    unplotted = [r.trial_id for r in records if not r.curve]
    if unplotted:
        ax.text(
            0.01,
            0.01,
            f"no validation (error before epoch 1): {', '.join(unplotted)}",
            transform=ax.transAxes,
            fontsize=7,
        )
    if ax.lines:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_outputs(
    setup: SweepSetup, records: List[TrialRecord], best: Optional[TrialRecord], extra: Dict
) -> Dict[str, str]:
    """Write every output file into ``setup.output_dir``; returns ``{kind: path}``.

    ``extra`` (tool, wall time...) goes into ``summary.json``. Without a completed trial there is no
    best config to write.
    """
    paths = {kind: os.path.join(setup.output_dir, name) for kind, name in OUTPUT_FILES.items()}
    best_id = best.trial_id if best else None
    rows = _rows(setup, records)
    write_csv(paths["csv"], rows)
    note = (
        f"Selected on validation {setup.valid_metric}: **{best.trial_id}** (best valid {best.best_valid_score:.6g}); "
        f"its test result: {', '.join(f'{k}={v:.4f}' for k, v in best.test_result.items())}.\n"
        if best
        else "No trial completed, so none was selected.\n"
    )
    with atomic_write(paths["markdown"]) as f:
        f.write(markdown_table(rows, best_id) + "\n" + note)
    plot_curves(paths["plot"], setup, records, best_id)
    if best is None:
        del paths["best_config"]
    else:
        header = (
            f"# {setup.model} on {setup.dataset}: best of {len(records)} trials (sweep {setup.output_dir}).\n"
            f"# Chosen on validation {setup.valid_metric} = {best.best_valid_score:.6g}; "
            f"test: {json.dumps(best.test_result)}\n"
            f"# Run: python run_recbole_mm.py --model={setup.model} --dataset={setup.dataset} "
            f"--config_files={paths['best_config']}\n"
        )
        with atomic_write(paths["best_config"]) as f:
            f.write(header + yaml.safe_dump(best_config(setup, best), sort_keys=False))
    summary = dict(
        extra,
        model=setup.model,
        dataset=setup.dataset,
        valid_metric=setup.valid_metric,
        valid_metric_bigger=setup.bigger,
        trials={s: sum(r.status == s for r in records) for s in (COMPLETED, STOPPED, ERROR)},
        best=(
            None
            if best is None
            else dict(
                trial=best.trial_id,
                params=best.params,
                best_valid_score=best.best_valid_score,
                epochs_run=best.epochs_run,
                test_result=best.test_result,
                saved_model_file=best.saved_model_file,
            )
        ),
        files=paths,
    )
    with atomic_write(paths["summary"]) as f:
        json.dump(summary, f, indent=2, default=str)
    return paths
