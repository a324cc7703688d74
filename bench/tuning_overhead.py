"""Benchmark: what Ray Tune costs on the machine it runs on. The same trials (BPR on RecBole's MovieLens-100K, a grid of
learning rates, no pruning) run four ways, side by side:

- ``serial``: ``objective_function`` one trial after another in this process, no sweep tool (the baseline);
- ``hyperopt``: ``run_sweep(tool="hyperopt")``, also in this process, one after another;
- ``ray x1``: ``run_sweep(tool="ray", max_concurrent=1)``: the serial schedule in Ray workers (pure overhead);
- ``ray x2``: ``run_sweep(tool="ray")`` with 2 trials at once on ``--cpus`` CPUs (what parallelism buys back).

Ray's start-up (``ray.init``) is counted in both Ray rows and also printed apart. Every row uses one torch
thread per trial, as Ray gives each 1-CPU trial.

    python bench/tuning_overhead.py                 # 4 trials x 2 epochs
    python bench/tuning_overhead.py --trials 6 --epochs 3
"""

import argparse
import os
import tempfile
import time

import torch

from recbole_mm.prepare.ml100k_mm import recbole_ml100k_dir
from recbole_mm.quick_start import objective_function
from recbole_mm.tuning import SweepOptions, run_sweep

WAYS = ["serial", "hyperopt", "ray"]  # serial: the baseline, always run
RATES = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]


def fixed_config(epochs: int) -> dict:
    return {
        "data_path": os.path.dirname(recbole_ml100k_dir()),
        "epochs": epochs,
        "stopping_step": 100,
        "train_batch_size": 2048,
        "eval_batch_size": 4096,
        "embedding_size": 64,
        "show_progress": False,
        "worker": 0,
    }


def run_serial(rates, epochs, work):
    start = time.perf_counter()
    for lr in rates:
        config = dict(fixed_config(epochs), model="BPR", dataset="ml-100k", learning_rate=lr)
        config["checkpoint_dir"] = tempfile.mkdtemp(dir=work)
        objective_function(config, None, saved=True)
    return time.perf_counter() - start


def run_tool(rates, epochs, work, name, **options):
    space = os.path.join(work, "lr.hyper")
    with open(space, "w") as f:
        f.write(f"learning_rate choice {rates}\n")
    start = time.perf_counter()
    result = run_sweep(
        "BPR",
        "ml-100k",
        space,
        None,
        fixed_config(epochs),
        SweepOptions(search="grid", scheduler="fifo", **options),
        os.path.join(work, name),
    )
    wall = time.perf_counter() - start
    assert all(r.status == "completed" for r in result.records), [r.error for r in result.records]
    return wall, result.wall_s


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help=f"trials (learning rates, at most {len(RATES)})")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use (ray x2 runs this many trials at once)")
    parser.add_argument("--ways", nargs="+", default=WAYS, choices=WAYS, help="the ways of running the trials")
    args = parser.parse_args()
    rates = RATES[: args.trials]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        rows = [("serial", run_serial(rates, args.epochs, work), None)]
        if "hyperopt" in args.ways:
            wall, inner = run_tool(rates, args.epochs, work, "hyperopt", tool="hyperopt")
            rows.append(("hyperopt", wall, inner))
        for name, concurrent in (("ray x1", 1), ("ray x2", 0)):
            if "ray" not in args.ways:
                continue
            import ray

            start = time.perf_counter()
            ray.init(
                num_cpus=args.cpus,
                include_dashboard=False,
                runtime_env={"env_vars": {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}},
            )
            init_s = time.perf_counter() - start
            wall, inner = run_tool(rates, args.epochs, work, name.replace(" ", ""), max_concurrent=concurrent)
            ray.shutdown()
            rows.append((f"{name} (ray.init {init_s:.1f} s)", init_s + wall, inner))
    base = rows[0][1]
    print(
        f"\nBPR on ml-100k, {len(rates)} trials x {args.epochs} epochs, {os.cpu_count()} cores, "
        "torch threads per trial: 1"
    )
    print(f"{'way':32s} {'wall s':>8s} {'trials s':>9s} {'vs serial':>10s}")
    for name, wall, inner in rows:
        print(f"{name:32s} {wall:8.1f} {inner if inner is not None else wall:9.1f} {wall / base:9.2f}x")
    print("wall: whole call (Ray rows include ray.init); trials: from the first trial's start to the last trial's end")


if __name__ == "__main__":
    main()
