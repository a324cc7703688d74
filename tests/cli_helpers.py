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


def run_fresh(argv, cwd, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python ARGV`` in a fresh interpreter in ``cwd`` (the package under test on its path, one thread); asserts
    that it exits with status 0 and returns the finished process."""
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
