"""Produce ``results/ml-100k_mm.md``: MISSRec in its four settings next to RecBole's SASRec and BERT4Rec
on ml-100k_mm, same split and protocol (``results/ml-100k_mm.yaml``), mean and std over seeds.

    python results/run_ml100k_mm.py --device cuda           # the table (GPU machine; hours on a CPU)
    python results/run_ml100k_mm.py --smoke --device cpu    # pipeline check: 60 users, 1 epoch, 1 seed
    python results/run_ml100k_mm.py --device cuda --jobs 8 --record results/runs   # 8 at once, resumable
    python results/run_ml100k_mm.py --device cuda --jobs 8 --record results/runs --ablation   # + ablation rows

Rows ("With ID" = transductive_ft with item ID embeddings, else inductive_ft on features only):

- "Pre-trained" = pre-trained on domain A of ``ml-100k_mm`` (movies with Drama or Romance; see
  ``recbole_mm/prepare/ml100k_mm_domains.py``) with ``props/MISSRec/pretrain.yaml``, one pre-training per
  seed, then fine-tuned on the whole ``ml-100k_mm`` with the PT1 recipe (Transformer and position embedding frozen).
  Pre-training reads only ``ml-100k_mm_A.train.inter``, which holds none of ``ml-100k_mm``'s validation
  or test targets (a target that is a domain-A movie is among the user's last two A ratings, held out). ``ml-100k_mm``
  itself cannot be pre-trained on: it has no word-dropped text (``feat2CLS``), which pre-training needs.
- Every row is one ``run_recbole_mm.py`` command (printed, and listed in the table file); this script
  runs the pre-trainings first, by themselves, then the fine-tunings (``--jobs`` at a time in each phase), and
  reads the test metrics they print.

``--smoke`` runs every command on a 60-user copy of the data in a temporary folder with tiny sizes and
prints what it got; it never writes ``results/ml-100k_mm.md``.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL = "results/ml-100k_mm.yaml"
TABLE = os.path.join(ROOT, "results", "ml-100k_mm.md")
DATASET = "ml-100k_mm"
METRICS = ["hit@10", "hit@50", "ndcg@10", "ndcg@50"]
SMOKE = {"hidden_size": 32, "inner_size": 32, "n_heads": 2, "n_layers": 2, "eval_batch_size": 256}
SMOKE_USERS, SMOKE_ROWS = 60, 15

# label -> (model, extra settings, pre-trained)
ROWS = {
    "SASRec": ("SASRec", {}, False),
    "BERT4Rec": ("BERT4Rec", {}, False),
    "MISSRec, ID, from scratch": ("MISSRec", {"train_stage": "transductive_ft"}, False),
    "MISSRec, no ID, from scratch": ("MISSRec", {"train_stage": "inductive_ft"}, False),
    "MISSRec, ID, pre-trained": ("MISSRec", {"train_stage": "transductive_ft"}, True),
    "MISSRec, no ID, pre-trained": ("MISSRec", {"train_stage": "inductive_ft"}, True),
}
# --ablation: "MISSRec, ID, from scratch" with one part taken away, for finding out why MISSRec does or does not
# beat SASRec ("image" is the genre description on ml-100k_mm; one interest: K = 1, every token the same interest)
ABLATION_BASE = {"train_stage": "transductive_ft"}
ABLATIONS = {
    "ablation: MISSRec, ID, from scratch, text only": ("MISSRec", {**ABLATION_BASE, "modal_type": "text"}, False),
    "ablation: MISSRec, ID, from scratch, genres only": ("MISSRec", {**ABLATION_BASE, "modal_type": "img"}, False),
    "ablation: MISSRec, ID, from scratch, one interest": ("MISSRec", {**ABLATION_BASE, "interest_ratio": 1e-4}, False),
    "ablation: MISSRec, ID, from scratch, no regulariser": ("MISSRec", {**ABLATION_BASE, "gamma": 0}, False),
}
ROWS.update(ABLATIONS)


def command(model: str, dataset: str, config_files: List[str], settings: Dict) -> List[str]:
    args = [sys.executable, "run_recbole_mm.py", f"--model={model}", f"--dataset={dataset}"]
    args.append(f"--config_files={' '.join(config_files)}")
    return args + [f"--{key}={value}" for key, value in settings.items()]


def shown(args: List[str]) -> str:
    return " ".join(shlex.quote(a) for a in ["python"] + args[1:])


def run(args: List[str], record: Optional[str] = None, output: Optional[str] = None) -> Dict[str, float]:
    """Run one command from the repository root; the test metrics it prints (empty for pre-training).

    With ``record`` (a JSON file), a finished run is read from it instead of being run again (when the file
    ``output`` it made, if any, still exists), and a new run is written to it (atomically) with its command,
    seconds and metrics: an interrupted table continues.
    """
    if record and os.path.isfile(record) and (output is None or os.path.isfile(os.path.join(ROOT, output))):
        with open(record, encoding="utf-8") as f:
            done = json.load(f)
        if done["command"] == shown(args):
            print(f"= {shown(args)}  (recorded: {os.path.basename(record)})", flush=True)
            return done["metrics"]
    print(f"$ {shown(args)}", flush=True)
    start = time.time()
    done = subprocess.run(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(done.stdout[-5000:], file=sys.stderr)
        raise SystemExit(f"command failed (exit {done.returncode}): {shown(args)}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("  test ")]
    metrics = {k: float(v) for k, v in re.findall(r"(\S+@\d+) ([0-9.]+)", lines[-1])} if lines else {}
    seconds = time.time() - start
    print(f"  {seconds:.0f} s  {shown(args)[-60:]}  " + "  ".join(f"{k} {v}" for k, v in metrics.items()), flush=True)
    if record:
        from recbole_mm.data.atomic_files import atomic_write

        with atomic_write(record) as f:
            json.dump({"command": shown(args), "seconds": round(seconds, 1), "metrics": metrics}, f)
    return metrics


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def record_path(folder: Optional[str], label: str, seed: int) -> Optional[str]:
    """``<folder>/<label as a slug>-seed<seed>.json``, or None without a folder."""
    return os.path.join(folder, f"{slug(label)}-seed{seed}.json") if folder else None


def pretrain_command(seed: int, common: Dict, pretrain_epochs: int) -> List[str]:
    from recbole_mm.prepare.ml100k_mm_domains import NAME_A

    settings = {**common, "seed": seed, "pretrain_epochs": pretrain_epochs, "save_step": pretrain_epochs}
    settings["ckpt_suffix"] = f"seed{seed}"
    # the pre-training preset last: its batch size (4096, in-batch negatives) and interest ratio win
    return command("MISSRec", NAME_A, [PROTOCOL, "props/MISSRec/pretrain.yaml"], settings)


def checkpoint(seed: int, checkpoint_dir: str, pretrain_epochs: int) -> str:
    from recbole_mm.prepare.ml100k_mm_domains import NAME_A

    return os.path.join(checkpoint_dir, f"MISSRec-{NAME_A}-{pretrain_epochs}-seed{seed}.pth")


def run_in_two_phases(
    pretrainings: List[Tuple[List[str], Optional[str], str]],
    finetunings: Dict[Tuple[str, int], Tuple[List[str], Optional[str]]],
    jobs: int,
) -> Dict[Tuple[str, int], Dict[str, float]]:
    """Run every pre-training ``(args, record, output)``, ``jobs`` at a time, and only then every fine-tuning
    ``key -> (args, record)``, ``jobs`` at a time; the fine-tunings' metrics by key.

    The pre-trainings run by themselves: they are bound by the GPU's arithmetic (about 0.54 GFLOP per training row
    on ml-100k_mm_A, counted with torch's FlopCounterMode: 2.6 PFLOP for 100 epochs of its 48,510 rows), while a
    fine-tuning is bound by its host (``bench/README.md``, MISSRec B). Sharing the GPU with a dozen fine-tunings,
    the three pre-trainings of the first GPU run had not finished after 16 minutes; by themselves each needs
    one to two minutes of float32 arithmetic on an H100 (an estimate, not measured). Their checkpoints are then
    made early in a device session, and come back even if the session ends before the fine-tunings do.

    A failed run (``SystemExit`` from :func:`run`) is raised only after every run has had its turn, so one failure
    does not waste the rest of a device session; a fine-tuning whose pre-training failed fails on its missing
    checkpoint.
    """
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        first = [pool.submit(run, args, record, output) for args, record, output in pretrainings]
        wait(first)
        pending = {key: pool.submit(run, args, record) for key, (args, record) in finetunings.items()}
    for future in first:
        future.result()
    return {key: future.result() for key, future in pending.items()}


def table(results: Dict[str, List[Dict[str, float]]], commands: Dict[str, List[str]], seeds, header: str) -> str:
    out = [header, "", "| model | " + " | ".join(m.upper() for m in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for label, runs in results.items():
        cells = []
        for metric in METRICS:
            values = np.array([r[metric] for r in runs])
            std = values.std(ddof=1) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.4f} ± {std:.4f}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", f"Seeds: {', '.join(map(str, seeds))} (mean ± sample std). Commands, one per row and seed:", ""]
    for label, lines in commands.items():
        out += [f"- {label}:", "", "  ```bash", *(f"  {line}" for line in lines), "  ```", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    parser.add_argument("--epochs", type=int, default=300, help="maximum fine-tuning epochs (early stopping on)")
    parser.add_argument("--pretrain-epochs", type=int, default=100, help="MISSRec pre-training epochs on domain A")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022], help="seeds (default 3)")
    main_rows = [label for label in ROWS if label not in ABLATIONS]
    parser.add_argument("--rows", nargs="+", default=main_rows, choices=list(ROWS), metavar="ROW", help="rows to run")
    parser.add_argument("--ablation", action="store_true", help="add the ablation rows (ABLATIONS) to --rows")
    parser.add_argument("--jobs", type=int, default=1, help="commands run at once (one GPU can hold several)")
    parser.add_argument("--record", help="folder of per-run JSON records: finished runs are not run again")
    parser.add_argument("--smoke", action="store_true", help="60 users, 1 epoch, first seed, tiny sizes; no table file")
    args = parser.parse_args(argv)
    if args.ablation:
        args.rows = args.rows + [label for label in ABLATIONS if label not in args.rows]
    sys.path.insert(0, ROOT)
    from recbole_mm.prepare import ml100k_mm, ml100k_mm_domains

    data_path = os.path.join(ROOT, "dataset")
    ml100k_mm.ensure_built(data_path)
    ml100k_mm_domains.ensure_built(data_path)
    from recbole_mm.errors import ConfigError
    from recbole_mm.utils import gpu_id_for

    try:
        gpu_id = gpu_id_for(args.device)
    except ConfigError as error:
        raise SystemExit(f"--{error}")  # "--device: expected ..."
    common = {"gpu_id": gpu_id, "data_path": "dataset/"}  # over props/MISSRec/pretrain.yaml's
    checkpoint_dir = "saved"  # relative to the repository root, where the commands run
    seeds, epochs, pretrain_epochs = args.seeds, args.epochs, args.pretrain_epochs
    if args.smoke:
        scratch = tempfile.mkdtemp(prefix="ml100k_mm_smoke.")
        for name in (ml100k_mm.NAME, ml100k_mm_domains.NAME_A):
            ml100k_mm_domains.copy_slice(data_path, scratch, name, SMOKE_USERS, SMOKE_ROWS)
        checkpoint_dir = os.path.join(scratch, "saved")
        common.update(SMOKE, data_path=scratch, checkpoint_dir=checkpoint_dir)
        seeds, epochs, pretrain_epochs = seeds[:1], 1, 1
        print(f"SMOKE CHECK in {scratch}: {SMOKE_USERS} users, 1 epoch, seed {seeds[0]}; not results", flush=True)

    if args.record:
        os.makedirs(args.record, exist_ok=True)
    results: Dict[str, List[Dict[str, float]]] = {label: [] for label in args.rows}
    commands: Dict[str, List[str]] = {label: [] for label in args.rows}
    pretrained_rows = [label for label in args.rows if ROWS[label][2]]
    pretrainings = []
    for seed in seeds if pretrained_rows else []:
        pretrain = pretrain_command(seed, common, pretrain_epochs)
        made = checkpoint(seed, checkpoint_dir, pretrain_epochs)
        pretrainings.append((pretrain, record_path(args.record, "pretrain", seed), made))
        for label in pretrained_rows:
            commands[label].append(shown(pretrain))
    finetunings = {}
    for seed in seeds:
        for label in args.rows:
            model, extra, is_pretrained = ROWS[label]
            settings = {**common, **extra, "seed": seed, "epochs": epochs}
            # own folder: RecBole names checkpoints <model>-<time to the second>, and runs start together
            settings["checkpoint_dir"] = os.path.join(checkpoint_dir, slug(label) + f"-seed{seed}")
            if is_pretrained:
                settings["pretrained_path"] = checkpoint(seed, checkpoint_dir, pretrain_epochs)
            args_row = command(model, DATASET, [PROTOCOL], settings)
            commands[label].append(shown(args_row))
            finetunings[label, seed] = (args_row, record_path(args.record, label, seed))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))  # the runs' threads
    for (label, seed), metrics in run_in_two_phases(pretrainings, finetunings, args.jobs).items():
        missing = [m for m in METRICS if m not in metrics]
        if missing:
            raise SystemExit(f"{label}, seed {seed}: the run printed no test {missing}")
        results[label].append(metrics)

    if args.smoke:
        print(table(results, commands, seeds, "SMOKE CHECK (60 users, 1 epoch, tiny sizes): NOT RESULTS"))
        shutil.rmtree(scratch)
        return 0
    header = (
        f"# ml-100k_mm: MISSRec, SASRec and BERT4Rec\n\nProduced by `python results/run_ml100k_mm.py "
        f"--device {args.device} --epochs {epochs} --pretrain-epochs {pretrain_epochs} "
        f"--seeds {' '.join(map(str, seeds))}`. Protocol: `{PROTOCOL}` (leave-one-out, full ranking, "
        f"early stopping on valid NDCG@10); test metrics of the best validation epoch."
    )
    from recbole_mm.data.atomic_files import atomic_write

    with atomic_write(TABLE) as f:
        f.write(table(results, commands, seeds, header) + "\n")
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
