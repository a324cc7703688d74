"""Run result tables and write their markdown.

    python -m recbole_mm.results --all                          # every table, CPU protocol -> results/<table>.md
    python -m recbole_mm.results --tables sequential --rows SASRec "MISSRec, ID"
    python -m recbole_mm.results --all --protocol reference --device cuda   # the reference-sized protocol (GPU)
    python -m recbole_mm.results --smoke                        # tiny end-to-end check into a temporary folder
    python -m recbole_mm.results --all --report-only            # rewrite the markdown from the records
    python -m recbole_mm.results --all --address HOST:PORT --jobs 8   # runs as Ray tasks on a cluster

Recorded runs (``results/runs/<protocol>/<table>/``) are not run again; ``--force`` re-runs them. Each run is
claimed by a lock file beside its record first, so several copies (on one machine, or on machines sharing the
folder) split the work; Ctrl-C stops with a count of what is recorded, and the same command resumes. With
``--address`` the data, work and runs folders must be at the same paths on every node.
"""

import argparse
import os
import sys
import tempfile

from recbole_mm import compat
from recbole_mm.errors import RecBoleMMError
from recbole_mm.results.protocols import ROOT, load_protocol
from recbole_mm.results.report import write_markdown
from recbole_mm.results.runner import Plan, RunError, is_done, load_records, run_plan
from recbole_mm.results.tables import TABLES


def ensure_data(data_path: str, names) -> None:
    """Build ml-100k_mm, its two domains and its cold-start split under ``data_path`` where a table needs them and
    they are missing."""
    from recbole_mm.prepare import ml100k_mm, ml100k_mm_cold, ml100k_mm_domains

    if any(n.startswith("ml-100k_mm") for n in names):
        ml100k_mm.ensure_built(data_path)
    if any(n in (ml100k_mm_domains.NAME_A, ml100k_mm_domains.NAME_B) for n in names):
        ml100k_mm_domains.ensure_built(data_path)
    if ml100k_mm_cold.NAME in names:
        ml100k_mm_cold.ensure_built(data_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_mm.results", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--all", action="store_true", help="every table")
    parser.add_argument("--tables", nargs="+", choices=sorted(TABLES), default=[], help="tables to run")
    parser.add_argument("--rows", nargs="+", help="only these rows (labels; one table only)")
    parser.add_argument("--protocol", default="cpu", help="results/protocols/<name>.yaml or a path (default cpu)")
    parser.add_argument("--seeds", nargs="+", type=int, help="only these of the protocol's seeds")
    parser.add_argument("--force", action="store_true", help="re-run recorded runs")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--in-process", action="store_true", help="run in this process, not one process per run")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument(
        "--address", help="run every run as a Ray task on the cluster at this address (host:port or auto)"
    )
    parser.add_argument("--data-path", default=os.path.join(ROOT, "dataset"), help="folder of the datasets")
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "saved", "results"), help="cut data, checkpoints, logs")
    parser.add_argument("--runs-dir", default=os.path.join(ROOT, "results", "runs"), help="run records")
    parser.add_argument("--out-dir", default=os.path.join(ROOT, "results"), help="markdown and plots")
    parser.add_argument("--report-only", action="store_true", help="write the markdown from the records; run nothing")
    parser.add_argument(
        "--smoke", action="store_true", help="protocol 'smoke' (tiny slice, 1 epoch, 1 seed); everything in a temp folder"
    )
    return parser


def main(argv=None) -> int:
    compat.apply()
    args = build_parser().parse_args(argv)
    names = sorted(TABLES) if args.all else args.tables
    if args.smoke:
        args.protocol = "smoke"
        if args.runs_dir == build_parser().get_default("runs_dir"):
            scratch = tempfile.mkdtemp(prefix="recbole_mm_results_smoke.")
            args.runs_dir, args.out_dir, args.work_dir = (os.path.join(scratch, d) for d in ("runs", "out", "work"))
        names = names or sorted(TABLES)
        print(f"SMOKE CHECK (tiny slice, not results) into {os.path.dirname(args.runs_dir)}", flush=True)
    if not names:
        print("nothing to do: give --all or --tables", file=sys.stderr)
        return 2
    if args.rows and len(names) != 1:
        print("--rows needs exactly one table (--tables NAME)", file=sys.stderr)
        return 2
    plans = []
    try:
        protocol = load_protocol(args.protocol)
        os.makedirs(args.out_dir, exist_ok=True)
        datasets = {r.dataset or TABLES[n].dataset for n in names for r in TABLES[n].rows}
        if args.address and not args.report_only:
            from recbole_mm.results.runner import connect_ray

            connect_ray(args.address)
        if not args.report_only:
            ensure_data(args.data_path, datasets)
        failed = []
        for name in names:
            plan = Plan(TABLES[name], protocol, args.data_path, args.work_dir, args.runs_dir, args.rows, args.device)
            plans.append((plan, plan.seeds(args.seeds)))
        for plan, seeds in plans:
            if not args.report_only:
                try:
                    run_plan(plan, seeds, args.force, args.jobs, args.in_process, address=args.address)
                except RunError as error:
                    failed.append(str(error))
            if args.rows:  # the markdown always shows the whole table
                plan = Plan(plan.table, protocol, args.data_path, args.work_dir, args.runs_dir, None, args.device)
            records = load_records(plan, seeds)
            print(f"wrote {write_markdown(plan, records, seeds, args.out_dir)}", flush=True)
        if failed:
            print("\n".join(failed), file=sys.stderr)
            return 1
    except RecBoleMMError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done, total = progress(plans)
        message = f"interrupted; {done} runs recorded, {total - done} left; run the same command to resume"
        print(f"\n{message}", file=sys.stderr)
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            # a search interrupted: its trials stop with the Ray session; Ray's core worker, interrupted in a call,
            # aborts in its exit handler (Ray 2.6), so the process ends here, its records and claims already settled
            ray.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    return 0


def progress(plans) -> tuple:
    """``(recorded, asked)`` runs over ``[(plan, seeds)]``: what a resumed command would skip, of all it asks."""
    done = total = 0
    for plan, seeds in plans:
        found = load_records(plan, seeds)
        for row in plan.rows:
            for seed in seeds:
                total += 1
                done += is_done(found.get((row.label, seed)), plan.spec(row, seed))
    return done, total


if __name__ == "__main__":
    sys.exit(main())
