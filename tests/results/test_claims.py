"""The runner under concurrency and interruption: run claims (one lock file per record, stale locks broken by pid
and host), two runners on one runs folder doing every run exactly once, Ctrl-C ending in one line, and the scratch
folders of a killed runner cleaned by the next one."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import yaml

from recbole_mm.results import claims
from recbole_mm.results.protocols import ROOT, load_protocol, protocol_path
from recbole_mm.results.runner import Plan, run_plan, slug
from recbole_mm.results.tables import TABLES

pytestmark = pytest.mark.filterwarnings("ignore")

ROWS = ["Pop", "GRU4Rec", "BERT4Rec", "MISSRec, ID"]


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def runner_command(root, tmp_path, rows, *extra):
    return [
        sys.executable, "-m", "recbole_mm.results", "--smoke", "--tables", "sequential", "--rows", *rows,
        "--data-path", str(root), "--runs-dir", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
        "--work-dir", str(tmp_path / "work"), *extra,
    ]


def runner_env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def test_a_claim_is_exclusive_and_a_stale_one_is_broken_by_pid_and_host(tmp_path):
    record = str(tmp_path / "t" / "row-seed2020.json")
    assert claims.claim(record) and not claims.claim(record)  # held by this (live) process
    assert claims.holder(record)["pid"] == os.getpid()
    claims.release(record)
    assert not os.path.exists(record + ".lock") and claims.holder(record) is None

    lock = record + ".lock"
    with open(lock, "w") as f:  # a runner of this host killed with -9
        json.dump({"host": claims.host(), "pid": dead_pid(), "time": 0}, f)
    assert claims.holder(record) is None and claims.claim(record)
    with open(lock) as f:
        assert json.load(f)["pid"] == os.getpid()
    os.unlink(lock)
    with open(lock, "w") as f:  # another machine's runner: its pid cannot be checked, the claim is respected
        json.dump({"host": claims.host() + "-other", "pid": dead_pid(), "time": 0}, f)
    assert not claims.claim(record) and claims.holder(record)["host"].endswith("-other")


def test_two_runners_on_one_folder_do_every_run_exactly_once(ml100k_root, tmp_path):
    command = runner_command(ml100k_root, tmp_path, ROWS, "--in-process")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runner_env())
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runner_env())
    outputs = [p.communicate(timeout=600)[0] for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    started = [line for out in outputs for line in out.splitlines() if line.endswith(": running")]
    assert sorted(started) == sorted(f"[sequential] {row}, seed 2020: running" for row in ROWS), outputs
    folder = tmp_path / "runs" / "smoke" / "sequential"
    assert sorted(os.listdir(folder)) == sorted(f"{slug(row)}-seed2020.json" for row in ROWS)  # no lock left
    markdown = (tmp_path / "out" / "sequential.smoke.md").read_text()
    for row in ROWS:  # each runner waited for the other's runs: the table is complete
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row} |"))
        assert "(1 seed)" in line, line


def test_ctrl_c_ends_in_one_line_and_a_killed_runner_leaves_no_scratch_behind(ml100k_root, tmp_path):
    # a runner (one process per run) killed with -9 in the middle of a run
    env = runner_env()
    victim = subprocess.Popen(
        runner_command(ml100k_root, tmp_path, ["GRU4Rec"]), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        env=env, start_new_session=True,
    )
    scratch = tmp_path / "work" / "tmp"
    deadline = time.time() + 120
    while not (scratch.is_dir() and os.listdir(scratch)) and time.time() < deadline:
        time.sleep(0.2)
    left = os.listdir(scratch)
    assert left and all(name.startswith(f"recbole_mm_run.{claims.host()}.{victim.pid}.") for name in left)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    prefix = f"recbole_mm_run.{claims.host()}.{victim.pid}"
    assert not [name for name in os.listdir(tempfile.gettempdir()) if name.startswith(prefix)]

    # the next runner cleans the scratch, breaks the stale lock and starts the run again; Ctrl-C during it (its 300
    # epochs, a copy of the smoke protocol without a patience stop, outlast the signal's way on a loaded machine)
    with open(protocol_path("smoke"), encoding="utf-8") as f:
        slow = yaml.safe_load(f)
    slow["settings"].update(epochs=300, stopping_step=300)
    (tmp_path / "protocol").mkdir()
    with open(tmp_path / "protocol" / "smoke.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(slow, f)
    command = runner_command(ml100k_root, tmp_path, ["GRU4Rec", "BERT4Rec"], "--in-process")
    command[command.index("--smoke")] = "--protocol=" + str(tmp_path / "protocol" / "smoke.yaml")
    runner = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # a suite started in the background inherits SIGINT ignored; the runner must see Ctrl-C as a terminal sends it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in runner.stdout:
        if line.startswith("[sequential] GRU4Rec, seed 2020: running"):
            break
    time.sleep(1)  # into the run
    runner.send_signal(signal.SIGINT)
    _, err = runner.communicate(timeout=120)
    assert runner.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; 0 runs recorded, 2 left; run the same command to resume", err
    assert "Traceback" not in err
    assert os.listdir(scratch) == []
    records = tmp_path / "runs" / "smoke" / "sequential"
    assert not records.is_dir() or os.listdir(records) == []  # the broken stale lock and the runner's own released


def test_the_scratch_of_a_dead_runner_is_cleaned_and_a_live_ones_kept(ml100k_root, tmp_path):
    protocol = load_protocol("smoke")
    plan = Plan(TABLES["sequential"], protocol, str(ml100k_root), str(tmp_path / "w"), str(tmp_path / "r"), ["Pop"])
    scratch = tmp_path / "w" / "tmp"
    dead = scratch / f"recbole_mm_run.{claims.host()}.{dead_pid()}.abc"
    live = scratch / f"recbole_mm_run.{claims.host()}.{os.getpid()}.abc"
    other = scratch / f"recbole_mm_run.{claims.host()}-other.{dead_pid()}.abc"
    for folder in (dead, live, other):
        folder.mkdir(parents=True)
    run_plan(plan, in_process=True, log=lambda *_: None)
    assert sorted(os.listdir(scratch)) == sorted([live.name, other.name])


@pytest.fixture
def local_ray():
    """A local Ray instance with two worker CPUs, owned by this test (shut down after it)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_the_runner_dispatches_its_runs_as_ray_tasks_each_once(ml100k_root, tmp_path, local_ray):
    rows = ["Pop", "GRU4Rec", "BERT4Rec"]
    command = runner_command(ml100k_root, tmp_path, rows, "--address", local_ray, "--jobs", "2")
    runners = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=runner_env())
    ]
    outputs = [p.communicate(timeout=600)[0] for p in runners]
    assert [p.returncode for p in runners] == [0], outputs
    started = [line for out in outputs for line in out.splitlines() if line.endswith(": running")]
    assert sorted(started) == sorted(f"[sequential] {row}, seed 2020: running" for row in rows), outputs
    folder = tmp_path / "runs" / "smoke" / "sequential"
    records = [json.loads((folder / f"{row.lower()}-seed2020.json").read_text()) for row in rows]
    pids = {r["ran_on"]["pid"] for r in records}
    assert not pids & {p.pid for p in runners} and os.getpid() not in pids  # ran in Ray's worker processes
    assert all(r["test"]["ndcg@10"] >= 0 and r["stopped_by"] == "cap" for r in records)
