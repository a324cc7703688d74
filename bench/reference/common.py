"""Shared parts of the reference shims: RecBole's metrics on a hit matrix, the process's peak memory, result files.

The shims in this folder run an author's repository unmodified from a checkout the user names (nothing of it is
copied here) and recbole_mm's models through the public ``run_recbole_mm`` entry point on the same files.
"""

import json
import os
import resource
import subprocess
import tempfile
from collections.abc import Iterable

import torch


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
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ours_record(args, settings: dict, result: dict, times: dict, total_wall_s: float, **extra) -> dict:
    """The result JSON of a recbole_mm run beside the reference: ``extra`` (e.g. the model), the seed, settings,
    best validation and test figures, per-epoch training and validation times, total wall time, peak memory."""
    return {
        "side": "ours",
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
