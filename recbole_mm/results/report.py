"""The markdown file (and bar chart) of a table, from its run records."""

import os
from typing import Dict, List, Optional, Tuple

import yaml

from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.results.protocols import ROOT, Protocol
from recbole_mm.results.runner import Plan, cap_bound, cell, mean_std
from recbole_mm.results.search import search_lines
from recbole_mm.results.tables import Table

FINDINGS_DIR = os.path.join(ROOT, "results", "findings")
CAP_MARK = " †"  # a cell with a run that may not have converged (see cap_bound)


def _name(metric: str) -> str:
    name, k = metric.split("@")
    return f"{name.upper()}@{k}"


def _flow(settings: Dict) -> str:
    """Settings as one line of YAML flow style."""
    return yaml.safe_dump(settings, default_flow_style=True, width=100000).strip()


def table_command(table: Table, protocol: Protocol) -> str:
    extra = "" if protocol.name == "cpu" else f" --protocol {protocol.name}"
    return f"python -m recbole_mm.results --tables {table.name}{extra}"


def protocol_block(plan: Plan, records: Dict[Tuple[str, int], Dict]) -> List[str]:
    table, protocol = plan.table, plan.protocol
    settings = dict(protocol.settings)
    settings.update(protocol.table_settings.get(table.name) or {})
    lines = [f"## Protocol: `{protocol.name}` (`{os.path.relpath(protocol.path, ROOT)}`)", ""]
    datasets = sorted({r.dataset or table.dataset for r in plan.rows})
    candidates = table.settings.get("eval_candidates")
    if candidates:
        lines.append(f"- Data: {', '.join(f'`{d}`' for d in datasets)}; pre-split files (targets as described above).")
    else:
        lines.append(f"- Data: {', '.join(f'`{d}`' for d in datasets)}; leave-one-out pre-split files (per user the "
                     "last rating is the test target, the one before it the validation target).")
    if table.cut and (protocol.train_prefixes_per_user or protocol.history_length):
        lines.append(
            f"- Cut (training data only shrinks; every user keeps one validation and one test target): the last "
            f"{protocol.train_prefixes_per_user or 'all'} training prefixes per user, histories cut to their last "
            f"{protocol.history_length or 'all'} items."
        )
    if protocol.users:
        lines.append(f"- Users: only those with index below {protocol.users} (a slice, not results).")
    mode = str((table.settings.get("eval_args") or {}).get("mode", "full"))
    if mode.startswith(("uni", "pop")):
        lines.append(
            f"- Candidates: per user the positive and {mode[3:]} negatives sampled "
            f"{'uniformly' if mode.startswith('uni') else 'by popularity'} (RecBole's `{mode}`), one group per user."
        )
    elif candidates:
        lines.append(
            f"- Candidates: full ranking over only the items listed in `<dataset>.{candidates}` that occur in the "
            "dataset's files (`eval_candidates`; every other item scores -inf), one group per user."
        )
    else:
        lines.append("- Candidates: full ranking over all items (RecBole's full sort), one group per user.")
    metrics_line = (
        f"- Metrics: {', '.join(_name(m) for m in table.metrics)} on test, read once from the checkpoint of the best "
        "validation epoch"
    )
    if table.reference_metrics:
        metrics_line += (
            "; also at 11 and 51, which the reference MISSRec code's evaluator reports under the names @10 and @50 "
            "(its bundled RecBole reads column k of a max(topk)+1 wide hit matrix), for like-for-like comparison"
        )
    lines.append(metrics_line + ".")
    lines.append(
        f"- Selection: valid NDCG@10 after every epoch; early stopping with RecBole's stopping_step "
        f"{settings.get('stopping_step', 10)} (training stops at the {settings.get('stopping_step', 10) + 1}th "
        f"validation in a row without improvement), at most {settings.get('epochs', 300)} epochs (unless a row sets "
        f"its own, listed under Rows); the checkpoint of the best validation epoch is tested; test never used for a "
        f"choice."
    )
    lines.append(f"- Seeds: {', '.join(map(str, protocol.seeds))}; cells are mean ± sample std over the seeds.")
    shown = {k: v for k, v in settings.items()}
    lines.append(f"- Settings of every run (rows add theirs): `{_flow(shown)}`")
    if any(r.stage == "pretrain" for r in plan.rows) and protocol.pretrain_settings:
        lines.append(f"- Pre-training settings: `{_flow(protocol.pretrain_settings)}`")
    skip = set()
    if not table.cut:
        skip |= {"history_length", "train_prefixes_per_user"}
    if not any(r.stage == "pretrain" for r in plan.rows):
        skip |= {"pretrain", "pretrain_settings"}
    why = {key: text for key, text in protocol.why.items() if key not in skip}
    if why:
        lines += ["- Why these sizes:"] + [f"  - `{key}`: {text}" for key, text in why.items()]
    done = list(records.values())
    if done:
        wall = sum(r["wall_seconds"] for r in done)
        cpu = sum(r["cpu_seconds"] for r in done)
        env = done[-1]["environment"]
        dates = sorted(r["date"] for r in done)
        lines.append(
            f"- Cost: {len(done)} runs, {wall / 60:.1f} min of wall time summed over the runs (the table's wall time "
            f"when they run one at a time), {cpu / 60:.1f} min of process CPU time; {protocol.hardware or env['cpu']} "
            f"(`{env['cpu']}`, {env['cpu_count']} cores, OMP_NUM_THREADS={env['OMP_NUM_THREADS'] or 'unset'}), "
            f"torch {env['torch']}, RecBole {env['recbole']}; runs dated {dates[0]} to {dates[-1]}."
        )
    lines.append(f"- Command: `{table_command(table, protocol)}` (resumes: recorded runs are not run again).")
    return lines


def _rows_table(plan: Plan, records: Dict, seeds: List[int], metrics: List[str], extra: bool) -> List[str]:
    head = ["row"] + [_name(m) for m in metrics]
    if extra:
        head += ["valid NDCG@10", "best epoch / epochs run", "wall s / CPU s per run", "seeds"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in plan.rows:
        done = [records[row.label, s] for s in seeds if (row.label, s) in records]
        if row.stage == "pretrain":
            if not extra:
                continue
            cells = [""] * len(metrics) + ["", f"{done[0]['epochs_run'] if done else ''} (pre-training, recipe's end)"]
        else:
            mark = CAP_MARK if any(cap_bound(r) for r in done) else ""
            cells = [cell([r["test"][m] for r in done]) + mark if done else "" for m in metrics]
            if extra:
                cells.append(cell([r["best_valid"]["ndcg@10"] for r in done]))
                cells.append(" ".join(f"{r['best_epoch'] + 1}/{r['epochs_run']}" + (" cap" if cap_bound(r) else "")
                                      for r in done))
        if extra:
            wall = mean_std([r["wall_seconds"] for r in done])[0] if done else float("nan")
            cpu = mean_std([r["cpu_seconds"] for r in done])[0] if done else float("nan")
            cells.append(f"{wall:.0f} / {cpu:.0f}" if done else "")
            cells.append(f"{len(done)}/{len(seeds)}")
        out.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return out


def plot(plan: Plan, records: Dict, seeds: List[int], path: str) -> Optional[str]:
    """Bar chart of the table's plot metric (mean, error bar = sample std); None without matplotlib or data."""
    metric = plan.table.plot_metric
    rows = [r for r in plan.rows if r.stage != "pretrain" and any((r.label, s) in records for s in seeds)]
    if not metric or not rows:
        return None
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = [mean_std([records[r.label, s]["test"][metric] for s in seeds if (r.label, s) in records]) for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    means = [m for m, _ in stats]
    errors = [0.0 if s != s else s for _, s in stats]
    ax.barh(range(len(rows)), means, xerr=errors, color="tab:blue", alpha=0.8, capsize=3)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"test {_name(metric)} (mean ± sample std over seeds)")
    ax.set_title(f"{plan.table.title} ({plan.protocol.name} protocol)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def write_markdown(plan: Plan, records: Dict, seeds: List[int], out_dir: str) -> str:
    """Write ``<out_dir>/<table>.md`` (``<table>.<protocol>.md`` for another protocol than cpu) and its plot."""
    stem = plan.table.name if plan.protocol.name == "cpu" else f"{plan.table.name}.{plan.protocol.name}"
    path = os.path.join(out_dir, f"{stem}.md")
    png = plot(plan, records, seeds, os.path.join(out_dir, f"{stem}.png"))
    lines = [f"# {plan.table.title}", "", *plan.table.description, ""]
    lines += protocol_block(plan, records) + [""]
    lines += ["## Results", "", "Test metrics (mean ± sample std over the seeds):", ""]
    lines += _rows_table(plan, records, seeds, plan.table.metrics, extra=True) + [""]
    if any(cap_bound(r) for r in records.values()):
        lines += [
            f"{CAP_MARK} not converged: at least one seed's run ended at the epoch cap, or its best validation epoch "
            "lies within stopping_step epochs of the cap (marked `cap` in the epochs column).",
            "",
        ]
    if plan.table.reference_metrics:
        lines += ["The same runs at the reference evaluator's cut-offs (its \"@10\" and \"@50\" are these):", ""]
        lines += _rows_table(plan, records, seeds, plan.table.reference_metrics, extra=False) + [""]
    lines += search_lines(plan, plan.rows)
    if png:
        lines += [f"![test {_name(plan.table.plot_metric)} per row]({os.path.basename(png)})", ""]
    lines += ["Rows:", ""]
    for row in plan.rows:
        what = f"`{row.model}`"
        if row.overrides:
            what += " with `" + _flow(dict(row.overrides)) + "`"
        if row.pretrained_from:
            what += f", starting from the checkpoint of \"{row.pretrained_from}\" (same seed)"
        if row.dataset:
            what += f", on `{row.dataset}`"
        if row.config_files:
            what += ", presets " + ", ".join(f"`{f}`" for f in row.config_files)
        lines.append(f"- {row.label}: {what}" + (f"; {row.note}" if row.note else ""))
    missing = [f"{r.label} (seed {s})" for r in plan.rows for s in seeds if (r.label, s) not in records]
    if missing:
        lines += ["", f"**Not yet run ({len(missing)}):** " + "; ".join(missing) + "."]
    findings = os.path.join(FINDINGS_DIR, f"{stem}.md")
    if os.path.isfile(findings):
        with open(findings, encoding="utf-8") as f:
            lines += ["", f.read().strip()]
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return path
