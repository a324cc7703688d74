"""Command line of the sweep tool (``run_hyper.py`` and ``python -m recbole_mm.tuning``).

    python run_hyper.py --model=SASRec --dataset=ml-100k_mm --params_file=hyper/SASRec.hyper
    python run_hyper.py -m BPR -d ml-100k --params_file=hyper/BPR.hyper --tool=hyperopt --search=bayes
    python run_hyper.py -m SASRec -d ml-100k_mm --params_file=hyper/SASRec.hyper --address=auto --gpus_per_trial=1

Any other ``--key=value`` is a fixed configuration override for every trial (e.g. ``--epochs=20``).
"""

import argparse
import sys

from recbole_mm.tuning.sweep import SCHEDULERS, TOOLS, SweepOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", "-m", required=True, help="model name (recbole_mm's or RecBole's)")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name under data_path")
    parser.add_argument("--config_files", default=None, help="config files, separated by spaces")
    parser.add_argument("--params_file", required=True, help="search space: RecBole .hyper lines or .yaml")
    parser.add_argument(
        "--tool", default="ray", choices=TOOLS, help="ray (parallel, ASHA pruning) or hyperopt (sequential)"
    )
    parser.add_argument(
        "--search",
        default="random",
        choices=("random", "grid", "bayes"),
        help="random sampling, full grid of choices, or TPE (hyperopt only)",
    )
    parser.add_argument(
        "--num_samples", type=int, default=10, help="trials to sample (random/bayes; grid runs every point once)"
    )
    parser.add_argument(
        "--scheduler",
        default="asha",
        choices=SCHEDULERS,
        help="ray: asha prunes trials early, fifo runs all to the end",
    )
    parser.add_argument("--grace_period", type=int, default=1, help="asha: epochs before a trial may be stopped")
    parser.add_argument("--reduction_factor", type=int, default=2, help="asha: keep the top 1/factor at each rung")
    parser.add_argument(
        "--max_concurrent", type=int, default=0, help="ray: trials at once (0: as many as resources allow)"
    )
    parser.add_argument("--cpus_per_trial", type=float, default=1.0, help="ray: CPUs reserved per trial")
    parser.add_argument("--gpus_per_trial", type=float, default=0.0, help="ray: GPUs per trial (fractions share a GPU)")
    parser.add_argument("--address", default=None, help="ray: join this cluster ('auto', host:port, ray://host:port)")
    parser.add_argument(
        "--output_dir", default=None, help="results folder (default saved/hyper/<model>-<dataset>-<time>)"
    )
    return parser


def main(argv=None) -> int:
    args, rest = build_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    from recbole_mm import compat
    from recbole_mm.errors import RecBoleMMError

    compat.apply()  # before ray is imported (ray 2.6 reads numpy's removed aliases)
    from recbole_mm.config import settings_file

    args.params_file = settings_file(args.params_file)  # hyper/<Model>... are shipped in the settings tree
    from recbole_mm.tuning.sweep import parse_overrides, run_sweep

    options = SweepOptions(
        tool=args.tool,
        search=args.search,
        num_samples=args.num_samples,
        scheduler=args.scheduler,
        max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        address=args.address,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
    )
    try:
        result = run_sweep(
            args.model,
            args.dataset,
            args.params_file,
            config_files=args.config_files.split() if args.config_files else None,
            overrides=parse_overrides(rest),
            options=options,
            output_dir=args.output_dir,
        )
    except RecBoleMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(result.files["markdown"], encoding="utf-8") as f:
        print("\n" + f.read())
    print(f"{len(result.records)} trials in {result.wall_s:.1f} s; files:")
    for kind, path in result.files.items():
        print(f"  {kind:12s} {path}")
    return 0 if result.best is not None else 1
