"""Run the rows of a table per seed, one JSON record per run, and write the table's markdown (and plot).

Records live in ``<runs_dir>/<protocol>/<table>/<row slug>-seed<seed>.json``. A run whose record holds the same
run specification (model, dataset, stage, settings, seed, pre-training it starts from) is not run again; a record
made under other settings is run again (``--force`` re-runs everything asked for). A run executes
:func:`recbole_mm.quick_start.run_recbole_mm` in a fresh Python process (``python -m recbole_mm.results.worker``) or,
with ``in_process``, in this one; test metrics are those ``run_recbole_mm`` reads once, from the checkpoint of the
best validation epoch. Pre-training rows run first (their checkpoints feed the fine-tuning rows of the same seed).
"""

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

import numpy as np
import yaml

from recbole_mm.config import settings_file
from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.errors import RunError
from recbole_mm.results.claims import claim, clean_scratch, holder, release, scratch_dir
from recbole_mm.results.protocols import ROOT, Protocol, prepared_data_path
from recbole_mm.results.tables import Row, Table, slug

# settings that say where things are, not what is run: left out of the run specification
LOCATION_KEYS = ("data_path", "checkpoint_dir", "pretrained_path")


def record_path(runs_dir: str, protocol: str, table: str, label: str, seed: int) -> str:
    return os.path.join(runs_dir, protocol, table, f"{slug(label)}-seed{seed}.json")


def environment() -> Dict[str, str]:
    """Versions and hardware written into every record."""
    import recbole
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "torch": torch.__version__,
        "recbole": recbole.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "commit": commit,
    }


class Plan:
    """The runs of one table under one protocol: ``(row, seed)`` pairs with their specification and record."""

    def __init__(
        self,
        table: Table,
        protocol: Protocol,
        data_path: str,
        work_dir: str,
        runs_dir: str,
        rows: Optional[List[str]] = None,
        device: str = "cpu",
    ):
        self.table, self.protocol, self.work_dir, self.runs_dir = table, protocol, work_dir, runs_dir
        self.device = device
        wanted = list(rows) if rows else [r.label for r in table.rows]
        for label in wanted:
            table.row(label)  # unknown labels raise here
        # a fine-tuning row needs its pre-training row, a row tuned from another that row's search
        for label in list(wanted):
            row = table.row(label)
            for needed in (row.pretrained_from, row.tuned_from):
                if needed and needed not in wanted:
                    wanted.append(needed)
        self.rows = [r for r in table.rows if r.label in wanted]
        names = sorted({r.dataset or table.dataset for r in self.rows})
        self.data_path = prepared_data_path(protocol, table.cut, data_path, work_dir, names)
        self.tuned: Dict[str, Dict] = {}  # row label -> values chosen by its recorded search
        self.load_tuned()

    def load_tuned(self) -> None:
        """Read the recorded searches of the rows (those that hold their current search specification)."""
        from recbole_mm.results.search import read_search, searched

        for row in self.rows:
            if searched(self, row):
                record = read_search(self, row)
                if record is not None:
                    self.tuned[row.label] = record["chosen"]
        for row in self.rows:
            if row.tuned_from and row.tuned_from in self.tuned:
                self.tuned[row.label] = self.tuned[row.tuned_from]

    def needs_search(self, row: Row) -> bool:
        from recbole_mm.results.search import searched

        return searched(self, row) and row.label not in self.tuned

    def spec(self, row: Row, seed: int, tuned: bool = True) -> Dict:
        """What defines a run (its record is reused only for an equal specification); locations kept apart.
        A searched row runs at the values its search chose (``tuned``); before its search they are missing."""
        settings = dict(self.table.settings)
        settings.update(self.protocol.run_settings(self.table.name, self.table.cut, row.stage))
        settings.update(row.overrides)
        if tuned:
            settings.update(self.tuned.get(row.label, {}))
        settings["seed"] = seed
        if row.stage == "pretrain":
            settings.update(train_stage="pretrain", ckpt_suffix=f"seed{seed}")
            if "pretrain_epochs" not in settings:  # the recipe's own length (the row's preset), named in the record
                settings["pretrain_epochs"] = preset_value(row, "pretrain_epochs")
        spec = {
            "table": self.table.name,
            "row": row.label,
            "protocol": self.protocol.name,
            "model": row.model,
            "dataset": row.dataset or self.table.dataset,
            "stage": row.stage,
            "config_files": list(row.config_files),
            "settings": settings,
            "seed": seed,
            "pretrained_from": None,
        }
        if row.pretrained_from:
            spec["pretrained_from"] = self.spec(self.table.row(row.pretrained_from), seed)
        return json.loads(json.dumps(spec))  # plain JSON types, as read back from a record

    def locations(self, row: Row, seed: int) -> Dict:
        settings = {
            "data_path": self.data_path,
            "checkpoint_dir": os.path.join(self.work_dir, "saved", self.protocol.name, self.table.name, slug(row.label), f"seed{seed}"),
            "device": self.device,
            "threads": self.protocol.threads,
            # RecBole runs on the CPU for an empty gpu_id
            "gpu_id": (self.device.split(":")[1] if ":" in self.device else "0") if self.device.startswith("cuda") else "",
        }
        return settings

    def record_path(self, row: Row, seed: int) -> str:
        return record_path(self.runs_dir, self.protocol.name, self.table.name, row.label, seed)

    def seeds(self, seeds: Optional[List[int]] = None) -> List[int]:
        return list(seeds) if seeds else list(self.protocol.seeds)


def preset_value(row: Row, key: str):
    """``key`` from the last of ``row``'s preset files that sets it (None if none does)."""
    value = None
    for name in row.config_files:
        with open(settings_file(name), encoding="utf-8") as f:
            value = (yaml.safe_load(f) or {}).get(key, value)
    return value


def stopped_by(spec: Dict, epochs_run: int) -> str:
    """``cap`` when a run used its whole epoch budget, ``patience`` when early stopping ended it; ``recipe`` for a
    pre-training (run for its fixed number of epochs)."""
    if spec["stage"] == "pretrain":
        return "recipe"
    return "cap" if epochs_run >= int(spec["settings"].get("epochs", 300)) else "patience"


def cap_bound(record: Dict) -> bool:
    """A run that may not have converged: stopped by the epoch cap, or its best epoch within ``stopping_step``
    epochs of the cap (more validations could have found a better one)."""
    spec = record["spec"]
    if spec["stage"] == "pretrain":
        return False
    cap = int(spec["settings"].get("epochs", 300))
    patience = int(spec["settings"].get("stopping_step", 10))
    by = record.get("stopped_by") or stopped_by(spec, int(record["epochs_run"]))
    return by == "cap" or (record.get("best_epoch") is not None and cap - 1 - record["best_epoch"] < patience)


def read_record(path: str) -> Optional[Dict]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _unlabelled(spec: Optional[Dict]) -> Optional[Dict]:
    """A specification without its row label (nor its pre-training's): what a run is, whatever its row is called."""
    if not isinstance(spec, dict):
        return spec
    out = {k: v for k, v in spec.items() if k != "row"}
    out["pretrained_from"] = _unlabelled(spec.get("pretrained_from"))
    return out


def load_records(plan: "Plan", seeds: List[int]) -> Dict[Tuple[str, int], Dict]:
    """The records of ``plan``'s runs that hold their specification, by ``(row label, seed)``.

    A record is found by what it ran, not only by its file name: a run recorded under another row label of the
    same table (a renamed row, or rows whose settings were swapped) is used and written to the row's own file. Every
    record of the folder is read before any is written, so no record is lost to a swap.
    """
    folder = os.path.join(plan.runs_dir, plan.protocol.name, plan.table.name)
    stored = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                record = read_record(os.path.join(folder, name))
                if record and isinstance(record.get("spec"), dict):
                    stored.append((os.path.join(folder, name), record))
    records, moves = {}, []
    for row in plan.rows:
        for seed in seeds:
            spec, path = plan.spec(row, seed), plan.record_path(row, seed)
            same = [(p, r) for p, r in stored if r["spec"] == spec]
            if not same:
                same = [(p, r) for p, r in stored if _unlabelled(r["spec"]) == _unlabelled(spec)]
            if same:
                found_path, record = same[0]
                record = dict(record, spec=spec)
                records[row.label, seed] = record
                if found_path != path or same[0][1]["spec"] != spec:
                    moves.append((path, record))
    for path, record in moves:
        with atomic_write(path) as f:
            json.dump(record, f, indent=1)
    return records


def is_done(record: Optional[Dict], spec: Dict) -> bool:
    """A record answers a run when it holds the same specification; a pre-training also needs its checkpoint."""
    if record is None or record.get("spec") != spec:
        return False
    if spec["stage"] == "pretrain":
        return bool(record.get("checkpoint")) and os.path.isfile(record["checkpoint"])
    return True


def execute(spec: Dict, locations: Dict, pretrained_path: Optional[str] = None) -> Dict:
    """Run one specification in this process; the result part of its record."""
    import torch

    from recbole_mm.quick_start import run_recbole_mm

    config = dict(spec["settings"])
    config.update({k: v for k, v in locations.items() if k not in ("device", "threads")})
    if locations.get("threads"):
        torch.set_num_threads(locations["threads"])
    if pretrained_path:
        config["pretrained_path"] = pretrained_path
    files = [settings_file(f) for f in spec["config_files"]]
    curve: List[List] = []
    argv = sys.argv
    sys.argv = argv[:1]  # RecBole's Config reads --key=value from the command line: keep the runner's out
    wall, cpu = time.time(), time.process_time()
    try:
        result = run_recbole_mm(
            model=spec["model"],
            dataset=spec["dataset"],
            config_file_list=files or None,
            config_dict=config,
            saved=True,
            callback_fn=lambda epoch, score: curve.append([int(epoch), float(score)]),
        )
    finally:
        sys.argv = argv
    wall, cpu = time.time() - wall, time.process_time() - cpu
    out = {
        "ran_on": {"host": socket.gethostname(), "pid": os.getpid()},
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "threads": torch.get_num_threads(),
        "valid_curve": curve,
    }
    if spec["stage"] == "pretrain":
        epochs = int(spec["settings"].get("pretrain_epochs") or 0)
        out.update(checkpoint=result["saved_model_file"], epochs_run=epochs, stopped_by=stopped_by(spec, epochs))
        return out
    best_epoch = None
    if curve:
        scores = [s for _, s in curve]
        best = max(scores) if result["valid_score_bigger"] else min(scores)
        # RecBole's early stopping takes a score equal to the best as the new best (and saves it): the last one
        best_epoch = curve[len(scores) - 1 - scores[::-1].index(best)][0]
    out.update(
        best_valid={k: float(v) for k, v in result["best_valid_result"].items()},
        best_valid_score=float(result["best_valid_score"]),
        test={k: float(v) for k, v in result["test_result"].items()},
        best_epoch=best_epoch,
        epochs_run=(curve[-1][0] + 1) if curve else 0,
        stopped_by=stopped_by(spec, (curve[-1][0] + 1) if curve else 0),
        checkpoint=result["saved_model_file"],
    )
    return out


def execute_in_subprocess(
    spec: Dict, locations: Dict, pretrained_path: Optional[str], log_path: str, scratch: str
) -> Dict:
    """:func:`execute` in a fresh ``python -m recbole_mm.results.worker`` (its output into ``log_path``; its job
    files in a folder under ``scratch``, deleted after the run or, after a ``kill -9``, by the next runner)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    tmp = scratch_dir(scratch)
    try:
        job, out = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        with open(job, "w", encoding="utf-8") as f:
            json.dump({"spec": spec, "locations": locations, "pretrained_path": pretrained_path}, f)
        with open(log_path, "w", encoding="utf-8") as log:
            env = dict(os.environ)
            if locations.get("threads"):
                env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(locations["threads"])
            code = subprocess.run(
                [sys.executable, "-m", "recbole_mm.results.worker", job, out],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            ).returncode
        if code != 0 or not os.path.isfile(out):
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = "".join(f.readlines()[-30:])
            raise RunError(
                f"table {spec['table']!r}, row {spec['row']!r}, seed {spec['seed']}: exit {code}; log {log_path}:\n{tail}"
            )
        with open(out, encoding="utf-8") as f:
            return json.load(f)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def connect_ray(address: str) -> None:
    """Join the Ray cluster at ``address`` (once per process); its workers import this repository's package."""
    import ray

    from recbole_mm.tuning.ray_tool import WORKER_ENV, check_address

    if ray.is_initialized():
        return
    check_address(address)
    env = dict(WORKER_ENV, PYTHONPATH=ROOT)
    ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env})


def execute_on_ray(spec: Dict, locations: Dict, pretrained_path: Optional[str]) -> Dict:
    """:func:`execute` as a Ray task (one CPU, never retried: a failed run is reported, not run twice) on the
    cluster joined by :func:`connect_ray`. Paths (data, checkpoints) must be the same on every node."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=0)(execute)
    env = {"OMP_NUM_THREADS": str(locations["threads"])} if locations.get("threads") else {}
    options = {"runtime_env": {"env_vars": env}} if env else {}
    return ray.get(task.options(**options).remote(spec, locations, pretrained_path))


def run_plan(
    plan: Plan,
    seeds: Optional[List[int]] = None,
    force: bool = False,
    jobs: int = 1,
    in_process: bool = False,
    log=print,
    poll_seconds: float = 2.0,
    address: Optional[str] = None,
) -> Dict[Tuple[str, int], Dict]:
    """Run every missing run of ``plan`` (pre-trainings first), write their records; all records by (row, seed).

    With ``address`` every run is a Ray task on that cluster (:func:`execute_on_ray`; ``jobs`` of them at once)
    and searches run their trials there. A pre-training runs only where a fine-tuning of its seed is missing.
    Each run is claimed first
    (:mod:`recbole_mm.results.claims`): a run another runner holds is waited for (its record is then read), or run
    here once its lock is stale. Failures are raised (as one :class:`RunError`) after every other run has had its turn.
    """
    seeds = plan.seeds(seeds)
    env = environment()
    lock, say = threading.Lock(), log

    def log(message: str) -> None:  # one whole line at a time from the worker threads
        with lock:
            say(message)

    records: Dict[Tuple[str, int], Dict] = {}
    todo = {}
    found = {} if force else load_records(plan, seeds)
    for row in plan.rows:
        for seed in seeds:
            spec = plan.spec(row, seed)
            record = found.get((row.label, seed))
            if not force and is_done(record, spec):
                records[row.label, seed] = record
            elif not force and row.stage == "pretrain":
                todo[row.label, seed] = spec  # decided below: only if a fine-tuning needs it
            else:
                todo[row.label, seed] = spec
    for (label, seed), spec in list(todo.items()):
        if spec["stage"] == "pretrain" and not force:
            needed = any(
                r.pretrained_from == label and (r.label, seed) in todo for r in plan.rows if r.stage == "finetune"
            )
            if not needed:
                del todo[label, seed]
                if (label, seed) in found:  # recorded, its checkpoint gone: its fine-tunings are all recorded
                    records[label, seed] = found[label, seed]
    errors: List[str] = []
    clean_scratch(os.path.join(plan.work_dir, "tmp"))

    def one(label: str, seed: int) -> str:
        """Run ``(label, seed)`` if this runner can claim it: ``done``, ``failed`` or ``held`` (by another runner)."""
        row = plan.table.row(label)
        spec = todo[label, seed]
        path = plan.record_path(row, seed)
        if not claim(path):
            return "held"
        try:
            record = read_record(path)  # another runner may have finished it since this one started
            if not force and is_done(record, spec):
                records[label, seed] = record
                return "done"
            return run_claimed(row, label, seed, spec, path)
        finally:
            release(path)

    def run_claimed(row: Row, label: str, seed: int, spec: Dict, path: str) -> str:
        pretrained = None
        if row.pretrained_from:
            source = records.get((row.pretrained_from, seed))
            if not source or not source.get("checkpoint") or not os.path.isfile(source["checkpoint"]):
                errors.append(
                    f"{plan.table.name} / {label} / seed {seed}: pre-training {row.pretrained_from!r} missing"
                )
                return "failed"
            pretrained = source["checkpoint"]
        log(f"[{plan.table.name}] {label}, seed {seed}: running")
        log_path = os.path.join(
            plan.work_dir, "logs", plan.protocol.name, plan.table.name, f"{slug(label)}-seed{seed}.log"
        )
        try:
            if address:
                result = execute_on_ray(spec, plan.locations(row, seed), pretrained)
            elif in_process:
                result = execute(spec, plan.locations(row, seed), pretrained)
            else:
                result = execute_in_subprocess(
                    spec, plan.locations(row, seed), pretrained, log_path, os.path.join(plan.work_dir, "tmp")
                )
        except Exception as error:  # every run gets its turn; reported together below
            errors.append(f"{plan.table.name} / {label} / seed {seed}: {error}")
            log(f"[{plan.table.name}] {label}, seed {seed}: FAILED: {str(error)[-2000:]}")
            return "failed"
        record = {
            "spec": spec,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "environment": env,
            "pretrained_path": pretrained,
            **result,
        }
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            json.dump(record, f, indent=1)
        records[label, seed] = record
        summary = "" if row.stage == "pretrain" else f"  test ndcg@10 {result['test'].get('ndcg@10', float('nan')):.4f}"
        log(f"[{plan.table.name}] {label}, seed {seed}: {result['wall_seconds']:.0f} s wall, "
            f"{result['cpu_seconds']:.0f} s CPU{summary}")
        return "done"

    announced = set()

    def run_phase(keys: List, step, path_of, parallel: bool = True) -> None:
        """``step(key)`` for every key; keys another runner holds are waited for, or taken over once stale."""
        waiting = list(keys)
        while waiting:
            if jobs <= 1 or len(waiting) == 1 or not parallel:
                states = [step(key) for key in waiting]
            else:
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    states = list(pool.map(step, waiting))
            held = [key for key, state in zip(waiting, states) if state == "held"]
            for key in held:
                if key not in announced:
                    announced.add(key)
                    owner = holder(path_of(key)) or {}
                    log(f"[{plan.table.name}] {key}: held by pid {owner.get('pid')} on {owner.get('host')}; waiting")
            if held and len(held) == len(waiting):
                time.sleep(poll_seconds)
            waiting = held

    def run_path(key) -> str:
        return plan.record_path(plan.table.row(key[0]), key[1])

    run_phase([k for k in todo if todo[k]["stage"] == "pretrain"], lambda key: one(*key), run_path)

    # the search stage: rows with missing runs and no recorded search are searched before their seeds run
    from recbole_mm.results.search import run_search, search_options, search_path

    def missing(label: str) -> bool:  # runs of the row, or of a row tuned from it, are missing
        return any((r.label, s) in todo for r in plan.rows if label in (r.label, r.tuned_from) for s in seeds)

    to_search = [row.label for row in plan.rows if plan.needs_search(row) and missing(row.label)]

    def search_one(label: str) -> str:
        row = plan.table.row(label)
        path = search_path(plan, row)
        if not claim(path):
            return "held"
        try:
            plan.load_tuned()  # another runner may have recorded it
            if label in plan.tuned:
                return "done"
            pretrained = None
            if row.pretrained_from:
                source = records.get((row.pretrained_from, search_options(plan.protocol)["seed"])) or {}
                pretrained = source.get("checkpoint")
            plan.tuned[label] = run_search(plan, row, pretrained, address, log)["chosen"]
            return "done"
        except Exception as error:  # the row's seeds are not run untuned
            errors.append(f"{plan.table.name} / {label} / search: {error}")
            log(f"[{plan.table.name}] {label}: search FAILED: {str(error)[-2000:]}")
            return "failed"
        finally:
            release(path)

    if to_search:
        # one search at a time: each runs its trials in parallel on Ray
        run_phase(to_search, search_one, lambda label: search_path(plan, plan.table.row(label)), parallel=False)
        plan.load_tuned()  # rows tuned from a searched row take its values
        found = {} if force else load_records(plan, seeds)
        for label, seed in [k for k in todo if todo[k]["stage"] != "pretrain"]:
            row = plan.table.row(label)
            if (row.tuned_from or label) in to_search and label not in plan.tuned:
                del todo[label, seed]  # its search failed
                continue
            todo[label, seed] = spec = plan.spec(row, seed)
            if not force and is_done(found.get((label, seed)), spec):
                records[label, seed] = found[label, seed]
                del todo[label, seed]
    run_phase([k for k in todo if todo[k]["stage"] != "pretrain"], lambda key: one(*key), run_path)
    if errors:
        raise RunError(f"{len(errors)} run(s) failed:\n" + "\n".join(errors))
    return records


# ----------------------------------------------------------------------------------------------------- aggregation
def mean_std(values: List[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; NaN for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else float("nan")


def cell(values: List[float], digits: int = 4) -> str:
    """``mean ± std`` of ``values`` (``value (1 seed)`` for one, empty for none)."""
    if not values:
        return ""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
