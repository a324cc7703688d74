"""The bench scripts are part of the product: each runs at a tiny scale as a subprocess (exit status 0 and its table
printed), and none reaches into recbole_mm's private names.

The scripts run two at a time (the slow test's cost is mostly interpreter and torch start-up), each in its own
temporary folder; scripts that need ml-100k_mm get a folder whose ``ml-100k_mm`` links to the session's slice.
``bench/gpu_checks.sh`` is not run: it is a list of CUDA commands (fused Triton kernel, CuPy/faiss GPU k-means,
compiled CUDA graphs) that needs a GPU. ``bench/ml100k_steps.py`` and ``bench/timing.py`` are modules of the other
scripts (no command line), run through them; ``bench/reference/common.py`` likewise through the reference scripts,
whose converter mode needs no reference checkout. ``bench/peak_memory.py`` runs at full scale in
``tests/test_memory.py`` (every model's defaults on ml-100k_mm), so not here.
"""

import ast
import concurrent.futures
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBRARIES = {"bench/ml100k_steps.py", "bench/timing.py", "bench/reference/__init__.py", "bench/reference/common.py"}
# scripts that another test runs at full scale: script -> that test
RUN_ELSEWHERE = {"bench/peak_memory.py": "tests/test_memory.py"}

# script -> (arguments, a pattern its output must hold); {data}: a data_path holding ml-100k_mm, {tmp}: a fresh folder
SCRIPTS = {
    "bench/anomaly_mode.py": (
        "--device cpu --models SASRec --steps 1 --rounds 1 --warmup 0 --data-path {data}",
        r"\| SASRec \| [\d.]+ ms/step \| [\d.]+ ms/step \| [\d.]+x \|",
    ),
    "bench/benchmark_cost.py": ("", r"Total: [\d.]+ h of CPU"),
    "bench/cold_start.py": ("--models SASRec --users 20 --rows 2 --epochs 1 --data-path {data}", r"SASRec: \d+ training rows"),
    "bench/dpc_knn.py": ("--tokens 300", r"dpc_knn\s+[\d.]+\s+[\d.]+"),
    "bench/encode.py": ("text --items 16 --batch-size 8 --device cpu", r"prepare encode path +[\d.]+ items/s"),
    "bench/epoch_cost.py": ("--rows BPR --data-path {data} --work-dir {tmp}", r"\| BPR \| \d+ \| \d+ \|"),
    "bench/feature_loading.py": ("--items 2000 --dim 8 --repeats 1", r"per-item loop"),
    "bench/kmeans.py": ("--regimes cpu --device cpu --reps 1 --scale 0.002", r"floor \(GEMMs alone\)"),
    "bench/long_sequence_memory.py": (
        "--users 24 --mean-length 12 --items 200 --max-len 16 --check-fraction 0.25",
        r"synthetic KuaiSAR-like data: 24 users",
    ),
    "bench/longseq.py": ("--data-path {data} --max-len 8 --models SIM --train-steps 1 --threads 1", r"\| SIM \|"),
    "bench/missrec.py": ("--device cpu --scale 0.002 --reps 1 --no-compile --data {tmp}", r"scores \+ top-50 +[\d.]+ s"),
    "bench/mmsrec_item_tower.py": (
        "--items 64 --dim 8 --width 16 --batch 4 --length 4 --reps 1",
        r"tower over the catalogue, fwd\+bwd: +[\d.]+ s",
    ),
    "bench/mmssl_memory.py": ("--scale 0.002 --batches 1 --threads 1", r"epoch \(extrapolated\): +[\d.]+ s wall"),
    "bench/seminar_retrieval.py": (
        "--items 2000 --dim 16 --subspaces 4 --codewords 16 --train-rows 1000 --lengths 200 --k 10 --users 4 "
        "--repeats 1",
        r"\| 200 \| 10 \| PQ \| [\d.]+ \|",
    ),
    "bench/step_overhead.py": (
        "--device cpu --reps 1 --no-compile --data-path {data}",
        r"\| whole step \(forward, backward, Adam\) \| [\d.]+ \|",
    ),
    "bench/tuning_overhead.py": ("--trials 1 --epochs 1 --ways serial", r"serial\s+[\d.]+"),
    "bench/reference/missrec.py": (
        "convert --dataset-dir {data}/ml-100k_mm --out {tmp}/missrec_data --name ml100k --users 20",
        r"convert: 20 users, \d+ training rows",
    ),
    "bench/reference/mmssl.py": (
        "convert --dataset-dir {data}/ml-100k_mm --out {tmp}/mmssl_data/ml100k",
        r"convert: 40 users, 1682 items, \d+ training pairs",
    ),
    "bench/reference/seminar.py": (
        "convert --dataset-dir {data}/ml-100k_mm --name ml100k --out {tmp}/seminar_data "
        "--ours-data-path {tmp}/seminar_ours --max-len 20",
        r"convert: 40 users, 1682 items",
    ),
}


def test_every_script_has_a_tiny_run():
    """A new script without an entry here fails: it would otherwise go untested."""
    found = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "bench", "**", "*.py"), recursive=True)}
    assert found - LIBRARIES == set(SCRIPTS) | set(RUN_ELSEWHERE)


def _private_uses(path):
    """``recbole_mm`` private names a script imports, and ``._name`` attributes it reads on objects other than
    ``self``. Left alone (allowed): RecBole's protected hooks that its subclassers use (``Trainer._train_epoch``,
    ``_valid_epoch``, a loader's ``_dataset``) and ``torch._dynamo`` (torch's public compiler API)."""
    allowed = {"_train_epoch", "_valid_epoch", "_dataset", "_dynamo"}
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recbole_mm"):
            module_private = any(part.startswith("_") for part in node.module.split("."))
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
            found += [f"from {node.module}"] if module_private else []
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id == "self") and node.attr not in allowed:
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("script", sorted(set(SCRIPTS) | set(RUN_ELSEWHERE)))
def test_no_private_names(script):
    assert _private_uses(os.path.join(ROOT, script)) == []


@pytest.fixture(scope="module")
def runs(ml100k_slice, tmp_path_factory):
    """``{script: future of its CompletedProcess}``: every script started at once, two at a time."""
    data = tmp_path_factory.mktemp("bench_data")
    os.symlink(os.path.join(str(ml100k_slice), "ml-100k_mm"), data / "ml-100k_mm")
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def run(script):
        args, _ = SCRIPTS[script]
        tmp = tmp_path_factory.mktemp(os.path.basename(script)[:-3])
        command = [sys.executable, script] + args.format(data=data, tmp=tmp).split()
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        yield {script: pool.submit(run, script) for script in sorted(SCRIPTS)}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_runs_at_tiny_scale(script, runs):
    done = runs[script].result()
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{output[-3000:]}"
    assert re.search(SCRIPTS[script][1], output), f"{script}: no match for {SCRIPTS[script][1]!r} in:\n{output[-3000:]}"
