"""Peak resident memory of a model's defaults on ml-100k_mm: one training epoch (or its first batches) and one
validation, in this process, on the CPU.

    python bench/peak_memory.py MMSRec                      # a whole epoch + validation
    python bench/peak_memory.py MMSRec --batches 3          # the first 3 training batches + validation
    python bench/peak_memory.py --all --batches 3           # every recbole_mm model, each in a fresh process

Only ``data_path``, ``epochs: 1``, ``gpu_id: ''`` and ``show_progress: False`` are set: every other setting is the
model's default (``recbole_mm/properties/model/<Model>.yaml`` over RecBole's). Prints one line per model, and with
``--json`` the same figures as JSON: the peak RSS of the process (``getrusage``), the estimate recbole_mm's
pre-training memory check makes, the batches trained and the seconds of CPU time.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MODELS = ["MISSRec", "MMSRec", "PMMRec", "SEMINAR", "SIM", "ETA", "QIN", "TWIN", "MMSSL"]


class FirstBatches:
    """A training dataloader that yields only its first ``n`` batches (every other attribute is the loader's)."""

    def __init__(self, loader, n: int):
        self._loader, self._n = loader, n

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def __len__(self):
        return min(self._n, len(self._loader))

    def __iter__(self):
        for index, batch in enumerate(self._loader):
            if index >= self._n:
                break
            yield batch


def measure(model_name: str, data_path: str, batches: int = 0) -> dict:
    """Train ``model_name``'s defaults on ml-100k_mm for an epoch (``batches`` > 0: its first ``batches``) and
    validate once; the figures of this process."""
    from recbole.utils import init_seed

    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation, ensure_dataset
    from recbole_mm.memory import estimate_training_bytes
    from recbole_mm.registry import get_model, get_trainer

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
    estimate = estimate_training_bytes(config, train_data)
    trainer = get_trainer(config["MODEL_TYPE"], model_name)(config, model)
    loader = FirstBatches(train_data, batches) if batches else train_data
    trainer.fit(loader, valid_data, verbose=False, saved=False, show_progress=False)
    return {
        "model": model_name,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "estimate_gib": estimate / 2**30,
        "batches": len(loader),
        "of_batches": len(train_data),
        "train_batch_size": config["train_batch_size"],
        "cpu_s": time.process_time() - start,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a recbole_mm model (or --all)")
    parser.add_argument("--all", action="store_true", help=f"every model, each in a fresh process: {MODELS}")
    parser.add_argument("--batches", type=int, default=0, help="train only the first N batches (0: the whole epoch)")
    parser.add_argument("--data_path", default="dataset/", help="parent folder of ml-100k_mm (built on first use)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.all:
        for name in MODELS:
            command = [sys.executable, os.path.abspath(__file__), name, "--batches", str(args.batches)]
            subprocess.run(command + ["--data_path", args.data_path] + (["--json"] if args.json else []), check=True)
        return 0
    if not args.model:
        parser.error("name a model or pass --all")
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value pairs from the command line
    figures = measure(args.model, args.data_path, args.batches)
    if args.json:
        print(json.dumps(figures), flush=True)
    else:
        print(
            f"{figures['model']:<8} peak RSS {figures['peak_rss_gib']:.2f} GiB (estimate {figures['estimate_gib']:.2f})"
            f"  {figures['batches']}/{figures['of_batches']} batches of {figures['train_batch_size']}"
            f"  {figures['cpu_s']:.0f} s CPU",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
