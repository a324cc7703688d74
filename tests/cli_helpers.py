"""Helpers of the tests that run the command lines: ``run_recbole_mm.main`` in this process, or a script in a fresh
interpreter with the package under test on its path."""

import os
import subprocess
import sys

import recbole_mm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: run_recbole_mm.py, bench/
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(recbole_mm.__file__)))  # the package under test


def run_main(monkeypatch, cwd, *args) -> int:
    """``run_recbole_mm.main`` in this process, as ``python run_recbole_mm.py ARGS`` run in ``cwd`` would (RecBole's
    Config reads ``--key=value`` from sys.argv); an exception other than the clear exit fails the test."""
    sys.path.insert(0, ROOT)
    try:
        import run_recbole_mm
    finally:
        sys.path.remove(ROOT)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py", *args])
    return run_recbole_mm.main()


def start_fresh(argv, cwd) -> subprocess.Popen:
    """Start ``python ARGV`` in a fresh interpreter in ``cwd`` (the package under test on its path, one thread), its
    standard output and error piped."""
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, *argv], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    """Wait for a process of :func:`start_fresh`; asserts that it exits with status 0 and returns it finished."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_fresh(argv, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python ARGV`` in a fresh interpreter in ``cwd``; asserts that it exits with status 0 and returns it."""
    return finish(start_fresh(argv, cwd), timeout)
