"""Shared parts of the reference shims: RecBole's metrics on a hit matrix, the process's peak memory, result files.

The shims in this folder run an author's repository unmodified from a checkout the user names (nothing of it is
copied here) and recbole_mm's models through the public ``run_recbole_mm`` entry point on the same files.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable

import torch


def shim_parser(description: str, argv=None):
    """A shim's argument parser with its subcommands, and its command line split at ``--`` (what follows goes to the
    reference's own script): ``(parser, subparsers, argv, passthrough)``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    passthrough = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="cmd", required=True), argv, passthrough


def add_run_options(parser, profile_help: str, out_help=None) -> None:
    """The options every run subcommand (reference or ours) ends with: threads, profile, result file."""
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, metavar="N", help=profile_help)
    parser.add_argument("--out", required=True, help=out_help)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def recbole_metrics(
    hits: torch.Tensor, pos_len: torch.Tensor, metrics: Iterable[str], topk: list[int]
) -> dict:
    """RecBole's own metric classes on RecBole's ``rec.topk`` record.

    Args:
        hits: [U, max(topk)] bool, hit at each ranked position.
        pos_len: [U] number of relevant items per user.
        metrics: RecBole metric names (``Recall``, ``NDCG``, ``Precision``, ``Hit``, ``MRR``).
        topk: cut-offs.

    Returns:
        ``{"recall@20": value, ...}`` as RecBole's evaluator reports them (4 decimals).
    """
    import numpy as np
    import recbole.evaluator.metrics as rm
    from recbole.evaluator.collector import DataStruct

    if (
        "float" not in np.__dict__
    ):  # what RecBole's Config.compatibility_settings does before any evaluation
        np.float, np.int = np.float64, np.int_

    data = DataStruct()
    data.set("rec.topk", torch.cat([hits.int(), pos_len.view(-1, 1).int()], dim=1))
    config = {"topk": list(topk), "metric_decimal_place": 4}
    out = {}
    for name in metrics:
        metric = getattr(
            rm, {"hit": "Hit", "mrr": "MRR", "ndcg": "NDCG"}.get(name.lower(), name)
        )(config)
        out.update(metric.calculate_metric(data))
    return out


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (a temporary file renamed into place)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def git_head(path: str) -> str:
    """The commit checked out at ``path`` (the reference checkout a row ran), or ``"unknown"``."""
    try:
        return subprocess.check_output(
            ["git", "-C", path, "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ours_record(args, settings: dict, result: dict, times: dict, total_wall_s: float, **extra) -> dict:
    """The result JSON of a recbole_mm run beside the reference (:func:`run_record` of side ``ours``)."""
    return run_record("ours", args, settings, result, times, total_wall_s, **extra)


def run_record(side: str, args, settings: dict, result: dict, times: dict, total_wall_s: float, **extra) -> dict:
    """The result JSON of a run of ``side`` (``ours`` or ``reference``) from RecBole's result dict: ``extra`` (e.g.
    the model or the reference's commit), the seed, settings, best validation and test figures, per-epoch training
    and validation times, total wall time, peak memory."""
    return {
        "side": side,
        **extra,
        "seed": args.seed,
        "settings": settings,
        "best_valid": dict(result["best_valid_result"]),
        "test": dict(result["test_result"]),
        "epochs_run": len(times["valid_wall"]),
        "train_epoch_wall_s": times["train_wall"],
        "train_epoch_cpu_s": times["train_cpu"],
        "valid_pass_wall_s": times["valid_wall"],
        "valid_pass_cpu_s": times.get("valid_cpu", []),
        "total_wall_s": total_wall_s,
        "peak_rss_mib": peak_rss_mib(),
        "threads": args.threads,
    }


# --------------------------------------------------------------------------------------------------------- profiles
class ProfileDone(Exception):
    """Ends a ``--profile`` run once its regions are measured (no result of the run is kept)."""


class BoundedLoader:
    """The first ``n`` batches drawn from ``loader``, restarting it as often as needed (a new epoch of the loader
    each time); ``len`` is ``n``; any other attribute is the loader's. ``rows`` counts the training rows drawn, with
    ``rows_of(batch)``."""

    def __init__(self, loader, n: int, rows_of):
        self.loader, self.n, self.rows_of, self.rows = loader, n, rows_of, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        drawn = 0
        while drawn < self.n:
            empty = True
            for batch in self.loader:
                empty = False
                self.rows += self.rows_of(batch)
                yield batch
                drawn += 1
                if drawn == self.n:
                    return
            if empty:
                raise ProfileDone("profile: the loader yields no batch")

    def __getattr__(self, name):
        return getattr(self.loader, name)


DATA_TAG = "data: sample"  # record_function label of a reference's own sampling call (no DataLoader)
SHARES = ("tensor ops, forward and loss", "tensor ops, backward", "tensor ops, optimizer",
          "data loading and sampling", "Python and other")


def op_shares(events, region_us: float) -> tuple[dict, list]:
    """Shares of a profiled region: top-level ATen operators (an ``aten::`` event with no ``aten::`` ancestor, its
    whole time) by phase (inside a DataLoader ``__next__`` or a ``DATA_TAG`` span: data loading; under
    ``Optimizer.step``: optimizer; under ``autograd::engine``: backward; else forward and loss); the data spans'
    non-operator time also counts as data loading; the rest of the region is Python and other (interpreter, model
    code between operators, profiler overhead). Returns the shares and the ten operators of most self time."""
    import collections

    def is_data(name: str) -> bool:
        return "DataLoader" in name or name == DATA_TAG

    us = dict.fromkeys(SHARES, 0.0)
    self_us = collections.Counter()
    for e in events:
        chain, p = [], e.cpu_parent
        while p is not None:
            chain.append(p.name)
            p = p.cpu_parent
        if e.name.startswith("aten::"):
            self_us[e.name] += e.self_cpu_time_total
        if is_data(e.name) and not any(map(is_data, chain)):
            us["data loading and sampling"] += e.cpu_time_total
            continue
        if not e.name.startswith("aten::") or any(c.startswith("aten::") for c in chain):
            continue
        if any(map(is_data, chain)):
            continue  # counted in its data span
        if any(c.startswith("Optimizer.") for c in chain):
            us["tensor ops, optimizer"] += e.cpu_time_total
        elif any(c.startswith("autograd::engine") for c in chain):
            us["tensor ops, backward"] += e.cpu_time_total
        else:
            us["tensor ops, forward and loss"] += e.cpu_time_total
    us["Python and other"] = max(region_us - sum(us.values()), 0.0)
    shares = {k: round(v / region_us, 3) for k, v in us.items()}
    top = [[name, round(t / region_us, 3)] for name, t in self_us.most_common(10)]
    return shares, top


class PhasedProfile:
    """One region of a run measured three times on one thread: ``plain`` (its CPU and wall seconds), ``torch``
    (under ``torch.profiler``: the shares of :func:`op_shares`, from the profiler's clock) and ``cprofile`` (under
    ``cProfile`` with ``time.process_time``: the ten Python-level functions of most own CPU time, operators called
    from Python counted as built-ins). Call ``start(phase)`` and ``stop(rows)`` around each phase in that order."""

    PHASES = ("plain", "torch", "cprofile")

    def __init__(self):
        self.out: dict = {}

    def start(self, phase: str) -> None:
        import cProfile

        from torch.profiler import ProfilerActivity, profile

        self.phase, self.prof = phase, None
        if phase == "torch":
            self.prof = profile(activities=[ProfilerActivity.CPU])
            self.prof.start()
        elif phase == "cprofile":
            self.prof = cProfile.Profile(time.process_time)
            self.prof.enable()
        self.c0, self.w0 = time.process_time(), time.perf_counter()

    def stop(self, rows=None) -> None:
        import pstats

        cpu, wall = time.process_time() - self.c0, time.perf_counter() - self.w0
        if self.phase == "plain":
            self.out.update(cpu_s=cpu, wall_s=wall)
            if rows is not None:
                self.out["rows"] = rows
        elif self.phase == "torch":
            self.prof.stop()
            self.out.update(profiled_cpu_s=cpu, profiled_wall_s=wall)
            self.out["shares"], self.out["top_ops_self"] = op_shares(self.prof.events(), wall * 1e6)
        else:
            self.prof.disable()
            stats = pstats.Stats(self.prof).stats
            top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]
            self.out["cprofile_cpu_s"] = cpu
            self.out["top_python_self"] = [
                [f"{os.path.basename(f)}:{line}({fn})", round(v[2] / cpu, 3)] for (f, line, fn), v in top
            ]


def profile_region(run, rows=None) -> dict:
    """:class:`PhasedProfile` of ``run()`` (run once per phase); ``rows()`` (optional) gives the rows the plain
    run processed."""
    p = PhasedProfile()
    for phase in p.PHASES:
        p.start(phase)
        run()
        p.stop(rows() if rows is not None and phase == "plain" else None)
    return p.out


def profile_trainer_patch(n_batches: int, regions: dict, evaluate: bool = True) -> None:
    """Make ``run_recbole_mm``'s trainer profile, in place of ``fit``, ``_train_epoch`` over ``n_batches`` training
    batches and (``evaluate``) one ``evaluate`` pass over the validation data (:func:`profile_region` each, into
    ``regions``), then raise :class:`ProfileDone`."""
    import recbole_mm.quick_start as qs

    original = qs.get_trainer

    def get_profiled_trainer(*a, **k):
        base = original(*a, **k)

        class Profiled(base):
            def fit(self, train_data, valid_data=None, *args, **kwargs):
                times = max(getattr(train_data, "times", 1), 1)  # RecBole repeats a row once per negative
                loader = BoundedLoader(train_data, n_batches, lambda b: len(b) // times)

                def train():
                    loader.rows = 0
                    self._train_epoch(loader, 0, show_progress=False)

                regions["train"] = profile_region(train, rows=lambda: loader.rows)
                regions["train"]["batches"] = n_batches
                if evaluate and valid_data is not None:
                    regions["eval"] = profile_region(
                        lambda: self.evaluate(valid_data, load_best_model=False, show_progress=False)
                    )
                    regions["eval"]["users"] = len(valid_data.uid_list) if hasattr(valid_data, "uid_list") else None
                raise ProfileDone

        Profiled.__name__ = base.__name__
        return Profiled

    qs.get_trainer = get_profiled_trainer
