"""Per-model cost of one training epoch under the results protocol (``results/protocols/cpu.yaml``): the rows of
the sequential table on the cut ml-100k_mm (last 10 training prefixes per user, histories of 20, width 64, batch
256), the general table's rows on every interaction; one thread, process CPU time and wall time of
``Trainer._train_epoch`` (no validation), rows and steps per epoch.

    python bench/epoch_cost.py                      # every model below
    python bench/epoch_cost.py --rows SASRec PMMRec --profile PMMRec   # and the top operators of PMMRec's epoch

Rows: ``table/row label`` of :mod:`recbole_mm.results.tables`; ``PMMRec (prefixes)`` is the PMMRec row fed every
training prefix (``train_rows: prefixes``), the feeding ``train_rows: windows`` replaces.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_mm.config import Config, settings_file  # noqa: E402
from recbole_mm.data.utils import create_dataset, data_preparation  # noqa: E402
from recbole_mm.registry import get_model, get_trainer  # noqa: E402
from recbole_mm.results.protocols import ROOT, load_protocol  # noqa: E402
from recbole_mm.results.runner import Plan  # noqa: E402
from recbole_mm.results.tables import TABLES  # noqa: E402

ROWS = {
    "SASRec": ("sequential", "SASRec", {}),
    "MISSRec": ("sequential", "MISSRec, ID", {}),
    "MMSRec": ("sequential", "MMSRec", {}),
    "PMMRec (prefixes)": ("sequential", "PMMRec", {"train_rows": "prefixes"}),
    "PMMRec": ("sequential", "PMMRec", {"train_rows": "windows"}),
    "BPR": ("general", "BPR", {}),
    "MMSSL": ("general", "MMSSL", {}),
}


def epoch_cost(name: str, data_path: str, work_dir: str, profile: bool = False) -> dict:
    table, label, extra = ROWS[name]
    plan = Plan(TABLES[table], load_protocol("cpu"), data_path, work_dir, os.path.join(work_dir, "runs"), [label])
    row = plan.table.row(label)
    spec = plan.spec(row, 2020, tuned=False)
    settings = dict(spec["settings"], **extra, data_path=plan.data_path, show_progress=False, gpu_id="")
    settings["checkpoint_dir"] = os.path.join(work_dir, "saved")
    config = Config(
        model=row.model,
        dataset=spec["dataset"],
        config_file_list=[settings_file(f) for f in row.config_files] or None,
        config_dict=settings,
    )
    train_data, _, _ = data_preparation(config, create_dataset(config))
    torch.manual_seed(2020)
    model = get_model(row.model)(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    wall, cpu = time.perf_counter(), time.process_time()
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainer._train_epoch(train_data, 0, show_progress=False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), flush=True)
    else:
        trainer._train_epoch(train_data, 0, show_progress=False)
    return {
        "row": name,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "rows": len(train_data._dataset),
        "steps": len(train_data),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--profile", nargs="*", default=[], help="rows whose epoch is profiled (torch.profiler)")
    parser.add_argument("--data-path", default=os.path.join(ROOT, "dataset"))
    parser.add_argument("--work-dir", default=os.path.join(ROOT, "saved", "bench_epoch_cost"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print("| row | training rows | steps | CPU s / epoch | wall s / epoch |", flush=True)
    print("|---|---|---|---|---|", flush=True)
    for name in args.rows:
        r = epoch_cost(name, args.data_path, args.work_dir, name in args.profile)
        print(f"| {r['row']} | {r['rows']} | {r['steps']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
