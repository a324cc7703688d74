"""MISSRec's interest-discovery choices side by side at downstream sizes: DPC-KNN (``interest_clustering: dpc_knn``),
the reference-compatible one-pass k-means (the default) and 20 Lloyd iterations (``kmeans_faithful: false``).

T tokens of dimension 300 (Gaussian blobs), K = ceil(0.5 T) interests and ceil(0.1 T) DPC-KNN neighbours, as
MISSRec's fine-tuning sizes them. Prints seconds and the inertia of each result relative to Lloyd's.

    python bench/dpc_knn.py --tokens 3364 20000 --device cpu    # ml-100k_mm's T, then a larger one
    python bench/dpc_knn.py --tokens 51972 --device cuda         # Office's T
"""

import argparse
import math

import torch
from timing import once

from recbole_mm.clustering import dpc_knn, kmeans, kmeans_reference

DIM = 300


def blobs(n_points: int, device: torch.device) -> torch.Tensor:
    """``[n, 300]`` points around ``n / 20`` Gaussian centres (seeded)."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(max(n_points // 20, 1), DIM, generator=gen) * 3
    members = torch.randint(len(centres), (n_points,), generator=gen)
    points = centres[members] + torch.randn(n_points, DIM, generator=gen)
    return points.to(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[3364, 20000], help="token counts T")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}")
    for n_tokens in args.tokens:
        x = blobs(n_tokens, device)
        k, local = math.ceil(0.5 * n_tokens), math.ceil(0.1 * n_tokens)
        peers = {
            "dpc_knn": lambda: dpc_knn(x, k, local_size=local),
            "kmeans_reference (one pass)": lambda: kmeans_reference(x, k),
            "kmeans (20 Lloyd iterations)": lambda: kmeans(x, k, n_iter=20),
        }
        # one untimed call first: every peer on CUDA (Triton autotuning of the fused k-means kernel, allocator),
        # DPC-KNN alone on the CPU (its allocator)
        warm = {name: int(device.type == "cuda" or name == "dpc_knn") for name in peers}
        results = {}
        for name, fn in peers.items():
            if warm[name]:
                fn()
            results[name] = once(fn, device)
        lloyd = results["kmeans (20 Lloyd iterations)"][1].inertia
        print(f"\nT = {n_tokens:,} tokens x {DIM}, K = {k:,}, DPC-KNN neighbours {local:,}")
        print(f"   {'method':<30}{'seconds':>10}{'inertia / Lloyd':>18}")
        for name, (seconds, result) in results.items():
            print(f"   {name:<30}{seconds:>10.2f}{result.inertia / lloyd:>18.3f}")


if __name__ == "__main__":
    main()
