"""SEMINAR's multi-modal product-quantised retrieval against exact scoring: recall@K and time per user.

For every user: a target and a history of ``L`` items, each with ``M = 4`` modalities (query, id, text, image) of
width ``d``; the exact score of a history item is ``< sum_i w_i q_i, sum_j w_j k_j >`` (SEMINAR's merged
attention, ``w = [0.1, 0.2, 0.3, 0.4]`` as in the reference study), and the exact top-K is the ground truth.
Rows, taking turns on the same users:

- exact: gather the ``M * d`` floats of each history item, one product, top-K;
- PQ: look-up tables of the target (asymmetric: its exact vectors), ``M * S`` look-ups per history item, top-K;
- PQ + re-rank: PQ top-``r K``, exact scores of those ``r K`` items only, top-K.

Data (stated in the output): ``synthetic`` draws every modality from a mixture of 1,024 Gaussian clusters in ``d``
dimensions (unit-norm rows); ``ml100k`` uses ml-100k_mm's MiniLM tables (title, genre description) projected to
``d`` by a fixed Gaussian matrix, plus clustered id and query tables (MovieLens has no such features), so its 1,682
items repeat inside long histories. Codebooks: S sub-spaces x C codewords per modality, trained with
``recbole_mm.clustering.kmeans`` on at most 65,536 rows (not timed). Times: one thread, median of ``--repeats``.

    python bench/seminar_retrieval.py                                  # synthetic, 100k items, L = 1,000 and 10,000
    python bench/seminar_retrieval.py --data ml100k --data-path /work/data
    python bench/seminar_retrieval.py --items 20000 --users 4 --lengths 1000 --repeats 1   # smoke run
"""

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from recbole_mm.model.retrieval import ProductQuantizer, exact_scores, two_stage_topk

MODALITIES = ["query", "id", "text", "image"]
WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4])


def clustered(n: int, d: int, clusters: int, spread: float, g: torch.Generator) -> torch.Tensor:
    centres = F.normalize(torch.randn(clusters, d, generator=g), dim=1)
    pick = torch.randint(0, clusters, (n,), generator=g)
    x = centres[pick] + spread * torch.randn(n, d, generator=g) / d**0.5
    x = F.normalize(x, dim=1)
    x[0] = 0  # padding item
    return x


def synthetic_tables(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return {m: clustered(n, d, 1024, 0.5, g) for m in MODALITIES}, f"synthetic: {n:,} items, 1,024 clusters/modality"


def ml100k_tables(data_path: str, d: int, seed: int):
    from recbole_mm.data.features import open_feature_file
    from recbole_mm.prepare import ml100k_mm

    folder = ml100k_mm.ensure_built(data_path)
    g = torch.Generator().manual_seed(seed)
    tables = {}
    for name, suffix in (("text", ml100k_mm.TEXT_SUFFIX), ("image", ml100k_mm.GENRE_SUFFIX)):
        raw = torch.from_numpy(np.array(open_feature_file(f"{folder}/{ml100k_mm.NAME}.{suffix}", 384)))
        proj = torch.randn(384, d, generator=g) / d**0.5
        table = torch.cat([torch.zeros(1, d), F.normalize(raw @ proj, dim=1)])  # row 0 = padding
        tables[name] = table
    n = tables["text"].shape[0]
    tables = {
        "query": clustered(n, d, 256, 0.5, g),
        "id": clustered(n, d, 256, 0.5, g),
        **tables,
    }
    return tables, f"ml-100k_mm: {n - 1:,} items, MiniLM title/genre projected to {d}-d, clustered id/query"


def take_turns(methods, repeats: int):
    """``{name: (median seconds, result)}``: one warm-up each, then ``repeats`` rounds in which every method runs
    once (so a change in machine load touches every method alike)."""
    results = {name: fn() for name, fn in methods.items()}
    times = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in methods}


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth))
    return hits / truth.numel()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["synthetic", "ml100k"], default="synthetic")
    parser.add_argument("--data-path", default="dataset", help="data root holding ml-100k_mm (--data ml100k)")
    parser.add_argument("--items", type=int, default=100_000, help="items of the synthetic tables")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--subspaces", type=int, default=16)
    parser.add_argument("--codewords", type=int, default=256)
    parser.add_argument("--train-rows", type=int, default=32768, help="rows sampled to train the codebooks")
    parser.add_argument("--init", default="kmeans++", choices=["kmeans++", "random"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--k", type=int, default=200, help="K of the top-K (KuaiSAR's 200)")
    parser.add_argument("--rerank", type=int, nargs="+", default=[2, 4], help="r of the PQ top-rK re-ranked exactly")
    parser.add_argument("--users", type=int, default=32, help="users per length (scored one batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.data == "synthetic":
        tables, what = synthetic_tables(args.items + 1, args.dim, args.seed)
    else:
        tables, what = ml100k_tables(args.data_path, args.dim, args.seed)
    n = tables["query"].shape[0]
    start = time.perf_counter()
    index = ProductQuantizer.fit(
        tables,
        args.subspaces,
        args.codewords,
        seed=args.seed,
        max_train_rows=args.train_rows,
        init=args.init,
        model="SEMINAR",
    )
    fit_s = time.perf_counter() - start
    print(
        f"{what}; M = {len(MODALITIES)}, d = {args.dim}, S = {args.subspaces}, C = {args.codewords} "
        f"({args.init}, {args.train_rows:,} training rows); "
        f"fit {fit_s:.1f} s; torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(
        f"bytes read per history item: exact {4 * len(MODALITIES) * args.dim}, "
        f"PQ {4 * len(MODALITIES) * args.subspaces} (int32 look-up positions; codes stored in "
        f"{len(MODALITIES) * args.subspaces} bytes)"
    )
    print()
    print("| L | K | method | recall@K vs exact | time per user | speed-up vs exact |")
    print("|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(args.seed + 1)
    for length in args.lengths:
        history = torch.randint(1, n, (args.users, length), generator=g)
        targets = torch.randint(1, n, (args.users,), generator=g)
        query = {m: t[targets] for m, t in tables.items()}
        k = min(args.k, length)

        methods = {
            "exact": lambda: exact_scores(tables, query, history, WEIGHTS).topk(k, dim=1).indices,
            "PQ": lambda: index.topk(query, history, WEIGHTS, k).indices,
        }
        for r in args.rerank:
            methods[f"PQ top-{r}K + exact re-rank"] = lambda r=r: two_stage_topk(
                index, tables, query, history, WEIGHTS, k, candidates=min(r * k, length)
            )[1]
        measured = take_turns(methods, args.repeats)
        t_exact, truth = measured["exact"]
        for name, (seconds, found) in measured.items():
            per_user = seconds / args.users * 1e3
            print(
                f"| {length:,} | {k} | {name} | {recall(found, truth):.3f} | {per_user:.3f} ms | "
                f"{t_exact / seconds:.2f}x |"
            )

if __name__ == "__main__":
    main()
