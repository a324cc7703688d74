"""Feature-table build: recbole_mm's vectorised gather against the per-item loop of UniSRec/MISSRec.

Both read the same raw float32 file (row = integer item token) and build the ``[n_items, dim]`` table
aligned to RecBole's internal ids (row 0 = PAD). The loop is our re-implementation of the reference
pattern (read the whole file, then copy one row per item in Python), for comparison only.

    python bench/feature_loading.py --items 200000 --dim 512
    python bench/feature_loading.py --items 400000 --dim 512 --fraction 0.1   # a dataset using 10% of the rows
"""

import argparse
import os
import tempfile
import time

import numpy as np

from recbole_mm.data.features import FeatureSpec, file_table


def reference_loop(path: str, dim: int, tokens: np.ndarray) -> np.ndarray:
    loaded = np.fromfile(path, dtype=np.float32).reshape(-1, dim)
    table = np.zeros((len(tokens) + 1, dim), dtype=np.float32)
    for i, token in enumerate(tokens, start=1):
        table[i] = loaded[int(token)]
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the file's rows the dataset uses")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "bench.feat1CLS")
        rng.standard_normal((args.items, args.dim), dtype=np.float32).tofile(path)
        used = rng.permutation(args.items)[: int(args.items * args.fraction)]  # RecBole's id order differs from rows
        tokens = used.astype(str).astype(object)
        spec = FeatureSpec(name="text", dim=args.dim, suffix="feat1CLS")
        timings = {"recbole_mm gather": [], "per-item loop": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = file_table(spec, directory, "bench", tokens)
            timings["recbole_mm gather"].append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = reference_loop(path, args.dim, tokens)
            timings["per-item loop"].append(time.perf_counter() - start)
        assert np.array_equal(ours, theirs)
    best = {name: min(t) for name, t in timings.items()}
    print(f"{len(tokens):,} of {args.items:,} file rows x {args.dim} float32, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"  {name:<18} {seconds:8.3f} s")
    print(f"  speed-up: {best['per-item loop'] / best['recbole_mm gather']:.1f}x")


if __name__ == "__main__":
    main()
