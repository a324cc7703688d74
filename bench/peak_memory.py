"""Peak resident memory of a model's defaults on ml-100k_mm: one training epoch (or its first batches) and one
validation (or its first batches), on the CPU.

    python bench/peak_memory.py MMSRec                                  # a whole epoch + validation
    python bench/peak_memory.py MMSRec --batches 3 --trace              # the first 3 batches, the peak after each
    python bench/peak_memory.py --all --batches 2 --valid-batches 1     # every recbole_mm model, one process
    python bench/peak_memory.py --all --fresh                           # every model in a fresh process each

Only ``data_path``, ``epochs: 1``, ``gpu_id: ''`` and ``show_progress: False`` are set: every other setting is the
model's default (``recbole_mm/properties/model/<Model>.yaml`` over RecBole's). The peak is the process's resident
high-water mark (``VmHWM``). Several models measured in one process each start from a reset mark: the garbage of the
model before is collected, freed heap returned to the system (``malloc_trim``) and the mark set back to the resident
memory of that moment (``/proc/self/clear_refs``, Linux 4.0+), so a model's peak counts what is still resident of
the ones before it (the ``resident before`` figure) and never less than its own; the mark is reset the same way
between the three phases (building data and model, training, validation), so each phase has its own peak. Where
the mark cannot be reset, run each model in a fresh process (``--fresh``); the phases' figures are then
cumulative. Prints one line per model, and with ``--json`` one JSON object per line: the peak of the whole and of
each phase, the estimate recbole_mm's pre-training memory check makes (to compare with the training phase), the
batches run and the CPU seconds; ``--trace`` adds the mark after every training batch.
"""

import argparse
import ctypes
import gc
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from typing import List, Optional

MODELS = ["MISSRec", "MMSRec", "PMMRec", "SEMINAR", "SIM", "ETA", "QIN", "TWIN", "MMSSL"]
GIB = 2**30


def high_water_bytes() -> int:
    """The process's peak resident memory: ``VmHWM`` (``getrusage`` where ``/proc`` is unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_high_water() -> bool:
    """Collect garbage, return freed heap to the system and set the high-water mark to the resident memory now;
    False where the mark cannot be reset (then only the first model of a process is measured alone)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def first_batches(loader, n: int, trace: Optional[List[int]] = None):
    """``loader`` made to yield only its first ``n`` batches (0: all), appending the high-water mark after each batch
    to ``trace``; its class is a subclass of the loader's, so the trainer treats it as the loader it was."""
    base = type(loader)

    def __iter__(self):
        batches = base.__iter__(self)
        for batch in itertools.islice(batches, n) if n else batches:
            yield batch
            if trace is not None:
                trace.append(high_water_bytes())

    def __len__(self):
        return min(n, base.__len__(self)) if n else base.__len__(self)

    loader.__class__ = type(f"First{base.__name__}", (base,), {"__iter__": __iter__, "__len__": __len__})
    return loader


def measure(model_name: str, data_path: str, batches: int = 0, valid_batches: int = 0, trace: bool = False) -> dict:
    """Train ``model_name``'s defaults on ml-100k_mm for an epoch (``batches`` > 0: its first ``batches``) and
    validate once (``valid_batches`` > 0: on its first ``valid_batches``); the figures of this process, its
    high-water mark reset first."""
    from recbole.utils import init_seed

    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation, ensure_dataset
    from recbole_mm.memory import estimate_training_bytes
    from recbole_mm.registry import get_model, get_trainer

    reset = reset_high_water()
    before = high_water_bytes()
    start = time.process_time()
    config = Config(
        model=model_name,
        dataset="ml-100k_mm",
        config_dict={"data_path": data_path, "epochs": 1, "gpu_id": "", "show_progress": False},
    )
    ensure_dataset(config)
    train_data, valid_data, _ = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset).to(config["device"])
    estimate = estimate_training_bytes(config, train_data, model)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    of_batches, of_valid = len(train_data), len(valid_data)
    marks: List[int] = []
    train_loader = first_batches(train_data, batches, marks if trace else None)
    valid_loader = first_batches(valid_data, valid_batches)
    peaks = {"build": high_water_bytes()}
    reset_high_water()  # each phase's own peak (the mark stays cumulative where it cannot be reset)
    trainer._train_epoch(train_loader, 0, show_progress=False)
    peaks["train"] = high_water_bytes()
    reset_high_water()
    trainer._valid_epoch(valid_loader, show_progress=False)
    peaks["valid"] = high_water_bytes()
    figures = {
        "model": model_name,
        "peak_rss_gib": max(peaks.values()) / GIB,
        **{f"peak_{phase}_gib": value / GIB for phase, value in peaks.items()},
        "resident_before_gib": before / GIB,
        "mark_reset": reset,
        "estimate_gib": estimate / GIB,
        "batches": len(train_loader),
        "of_batches": of_batches,
        "valid_batches": len(valid_loader),
        "of_valid_batches": of_valid,
        "train_batch_size": config["train_batch_size"],
        "eval_batch_size": config["eval_batch_size"],
        "cpu_s": time.process_time() - start,
    }
    if trace:
        figures["trace_gib"] = [round(mark / GIB, 4) for mark in marks]
    del trainer, model, train_data, valid_data, train_loader, valid_loader
    return figures


def line_of(figures: dict) -> str:
    return (
        f"{figures['model']:<8} peak RSS {figures['peak_rss_gib']:.2f} GiB (build {figures['peak_build_gib']:.2f}, "
        f"training {figures['peak_train_gib']:.2f}, validation {figures['peak_valid_gib']:.2f}, resident before "
        f"{figures['resident_before_gib']:.2f}; estimate {figures['estimate_gib']:.2f})  "
        f"{figures['batches']}/{figures['of_batches']} batches of {figures['train_batch_size']}, "
        f"{figures['valid_batches']}/{figures['of_valid_batches']} validation batches  {figures['cpu_s']:.0f} s CPU"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="recbole_mm models (or --all)")
    parser.add_argument("--all", action="store_true", help=f"every model: {MODELS}")
    parser.add_argument("--fresh", action="store_true", help="each model in a fresh process")
    parser.add_argument("--batches", type=int, default=0, help="train only the first N batches (0: the whole epoch)")
    parser.add_argument("--valid-batches", type=int, default=0, help="validate on the first N batches (0: all)")
    parser.add_argument("--trace", action="store_true", help="the high-water mark after every training batch")
    parser.add_argument("--data_path", default="dataset/", help="parent folder of ml-100k_mm (built on first use)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line per model")
    args = parser.parse_args(argv)
    models = MODELS if args.all else args.models
    if not models:
        parser.error("name a model or pass --all")
    if args.fresh and len(models) > 1:
        options = ["--batches", str(args.batches), "--valid-batches", str(args.valid_batches)]
        options += ["--data_path", args.data_path] + (["--json"] if args.json else []) + (["--trace"] if args.trace else [])
        for name in models:
            subprocess.run([sys.executable, os.path.abspath(__file__), name, *options], check=True)
        return 0
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value pairs from the command line
    for name in models:
        figures = measure(name, args.data_path, args.batches, args.valid_batches, args.trace)
        print(json.dumps(figures) if args.json else line_of(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
