"""Timing shared by the bench scripts: one stopwatch for wall and process CPU seconds that waits for the GPU."""

import statistics
import time
from typing import Callable, List, Optional, Tuple

import torch


def sync(device: Optional[torch.device] = None) -> None:
    """Wait for the work queued on ``device`` (CUDA only; nothing to wait for on the CPU or with None)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """``with Stopwatch(device) as watch: ...``, then ``watch.wall`` and ``watch.cpu``: wall and process CPU seconds
    (all threads) of the block; the GPU is waited for on entry and on exit."""

    def __init__(self, device: Optional[torch.device] = None):
        self.device = device
        self.wall = self.cpu = None

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self.started = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> bool:
        sync(self.device)
        self.wall = time.perf_counter() - self.started[0]
        self.cpu = time.process_time() - self.started[1]
        return False


def repeated(
    fn: Callable[[], object], device: Optional[torch.device] = None, reps: int = 1, warmup: int = 0, clock: str = "wall"
) -> Tuple[List[float], object]:
    """``(seconds of each of reps calls, the last result)`` after ``warmup`` untimed calls; ``clock`` is ``wall`` or
    ``cpu`` (process CPU time: the compute, which a busy shared machine does not inflate as it inflates wall time)."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', found {clock!r}")
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(reps):
        with Stopwatch(device) as watch:
            result = fn()
        times.append(watch.wall if clock == "wall" else watch.cpu)
    return times, result


def once(fn: Callable[[], object], device: Optional[torch.device] = None) -> Tuple[float, object]:
    """``(wall seconds, result)`` of one call of ``fn``."""
    times, result = repeated(fn, device)
    return times[0], result


def median_seconds(fn: Callable[[], object], device=None, reps: int = 1, warmup: int = 0, clock: str = "wall") -> float:
    """Median seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed ones (see :func:`repeated`)."""
    return statistics.median(repeated(fn, device, reps, warmup, clock)[0])


def mean_ms(fn: Callable[[], object], device: Optional[torch.device] = None, reps: int = 1, warmup: int = 0) -> float:
    """Mean milliseconds of ``fn`` over ``reps`` calls timed as one block after ``warmup`` untimed ones (the GPU is
    waited for before and after the block, not between calls)."""
    for _ in range(warmup):
        fn()
    with Stopwatch(device) as watch:
        for _ in range(reps):
            fn()
    return watch.wall * 1000 / reps


def logged(log: list, name: str, function: Callable) -> Callable:
    """``function`` wrapped to append ``(name, wall s, CPU s)`` to ``log`` at each call."""

    def wrapper(*args, **kwargs):
        with Stopwatch() as watch:
            result = function(*args, **kwargs)
        log.append((name, watch.wall, watch.cpu))
        return result

    return wrapper
