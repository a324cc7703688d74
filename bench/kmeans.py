"""Benchmark: recbole_mm.clustering.kmeans against its peers, side by side in one process.

Peers: ours (torch backend, with the fused Triton assignment on CUDA where it applies, and the same Lloyd passes
without it: cuBLAS products + min; in the batched regime the cupy backend; reference-compatible mode in the one-pass
regime, in float32 as MISSRec runs it and with TF32 products), TorchPQ ``KMeans``/``MultiKMeans``/``MinibatchKMeans``,
fast-pytorch-kmeans ``KMeans``/``MultiKMeans``,
faiss-cpu (all threads, all points), and a plain torch Lloyd loop. Every peer that accepts initial centroids
starts from the same ones (our seeded random init); a peer that is not installed is reported as unavailable.

Columns: time (median of --reps runs after one warm-up, the peers taking turns), time relative to ours, and the
inertia of the returned centroids (every point to its nearest returned centroid, float64) divided by the inertia
of a float64 Lloyd run from the same initial centroids and the same number of iterations (the quality target:
<= 1.005).

Regimes: cpu = 100k x 64, k=64, 20 it.; L = 1M x 256, K=1024, 20 it.; B = 1024 problems of 100 x 512,
k=8, 10 it.; P1 = 894k x 300, K=17,879, one reference pass (MISSRec pre-training); P = the same, 20 it.;
F = 52k x 300, K=26k, 20 it. (MISSRec fine-tuning on Office). The floor is the time of the assignment matrix
products alone (TF32 on CUDA, fp32 on CPU; best of 3).

Usage: python bench/kmeans.py --regimes cpu --device cpu
       python bench/kmeans.py --regimes L,B,P1,P,F --device cuda
"""

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from timing import sync

from recbole_mm.clustering import assign, fused_assign, kmeans, kmeans_reference
from recbole_mm.clustering.assign import matmul_precision, padded_operands
from recbole_mm.clustering.lloyd import lloyd
from recbole_mm.clustering.reference import reference_batches

REGIMES = {
    "cpu": dict(batch=None, n=100_000, d=64, k=64, n_iter=20),
    "L": dict(batch=None, n=1_000_000, d=256, k=1024, n_iter=20),
    "B": dict(batch=1024, n=100, d=512, k=8, n_iter=10),
    "P1": dict(batch=None, n=893_950, d=300, k=17_879, n_iter=1, one_pass=True),
    "P": dict(batch=None, n=893_950, d=300, k=17_879, n_iter=20),
    "F": dict(batch=None, n=51_972, d=300, k=25_986, n_iter=20),
}
TARGETS = {
    "L": "<= 85 ms",
    "B": "<= 1.5 ms",
    "P": ">= 8x TorchPQ",
    "P1": ">= 8x TorchPQ",
    "F": ">= 8x TorchPQ",
    "cpu": "<= 1.5x faiss-cpu (all points)",
}


WITH_FAISS_ON_CUDA = False


class Unavailable(Exception):
    """A peer that is not installed or does not run on this device."""


def progress(message):
    """A timestamped line on stderr (a slow or stuck peer shows where the time goes)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def plain_lloyd(x, init, n_iter, dtype, chunk=32768):
    """A plain torch Lloyd loop: chunked ||c||^2 - 2 x c^T argmin, index_add_ means (batched via bmm)."""
    single = x.dim() == 2
    x3, c = (x.unsqueeze(0), init.unsqueeze(0)) if single else (x, init)
    c = c.to(dtype).clone()
    n_batch, n, d = x3.shape
    k = c.shape[1]
    offsets = (torch.arange(n_batch, device=x.device) * k).unsqueeze(1)
    for _ in range(n_iter):
        sums = torch.zeros(n_batch * k, d, dtype=dtype, device=x.device)
        counts = torch.zeros(n_batch * k, dtype=dtype, device=x.device)
        for r0 in range(0, n, chunk):
            xb = x3[:, r0 : r0 + chunk].to(dtype)
            lab = (c.pow(2).sum(-1).unsqueeze(1) - 2 * torch.bmm(xb, c.transpose(1, 2))).argmin(-1) + offsets
            sums.index_add_(0, lab.flatten(), xb.reshape(-1, d))
            counts += torch.bincount(lab.flatten(), minlength=n_batch * k).to(dtype)
        full = counts > 0
        flat = c.view(-1, d)
        flat[full] = sums[full] / counts[full].unsqueeze(1)
    return c[0] if single else c


def inertia_of(x, centroids):
    """Float64 inertia of the nearest-centroid assignment (per problem in batched mode)."""
    x = x.to(centroids.device) if x.device != centroids.device else x
    res = kmeans(x, centroids.shape[-2], init=centroids.to(x.dtype), n_iter=0, precision="highest")
    return res.inertia if isinstance(res.inertia, float) else float(res.inertia.sum())


def peer_ours(x, k, n_iter, init, one_pass=False, **_):
    if one_pass:
        return kmeans_reference(x, k, batch_size=2048).centroids
    return kmeans(x, k, n_iter=n_iter, init=init).centroids


def peer_ours_tf32_pass(x, k, n_iter, init, one_pass=False, **_):
    if not one_pass:
        raise Unavailable("one-pass regime only (ours is TF32 already)")
    return kmeans_reference(x, k, batch_size=2048, precision="tf32").centroids


def peer_ours_unfused(x, k, n_iter, init, one_pass=False, **_):
    """Ours without the fused kernel: the same Lloyd passes on cuBLAS TF32 products + min, then the final pass."""
    if one_pass or not (x.is_cuda and x.dim() == 2 and assign.fused_applies(init.unsqueeze(0), "tf32")):
        raise Unavailable("the fused Triton path does not apply here")
    budget = assign.default_budget(x.device)
    settings = dict(budget=budget, precision="tf32", fused=False)
    centroids, _ = lloyd(
        x.unsqueeze(0), None, init.unsqueeze(0), n_iter=n_iter, tol=None, empty="keep", cosine=False, **settings
    )
    assign.assign_pass(x.unsqueeze(0), centroids, None, want_dist=True, **settings)  # ours labels and measures too
    return centroids[0]


def peer_ours_cupy(x, k, n_iter, init, one_pass=False, **_):
    if one_pass or x.dim() != 3:
        raise Unavailable("batched regime only")
    try:
        return kmeans(x, k, n_iter=n_iter, init=init, backend="cupy").centroids
    except Exception as error:  # not installed, or not applicable: reported as such
        raise Unavailable(str(error).split(";")[0]) from error


def peer_plain(x, k, n_iter, init, one_pass=False, **_):
    if one_pass:
        raise Unavailable("no one-pass variant")
    return plain_lloyd(x, init, n_iter, x.dtype)


def peer_faiss(x, k, n_iter, init, one_pass=False, **_):
    if one_pass or x.dim() != 2:
        raise Unavailable("single problem, full passes only")
    if x.is_cuda and not WITH_FAISS_ON_CUDA:
        raise Unavailable("a CPU peer, skipped in CUDA regimes (--faiss-on-cuda; 54 s for L on 16 cores)")
    try:
        import faiss
    except ImportError as error:
        raise Unavailable("faiss not installed") from error
    data = np.ascontiguousarray(x.cpu().numpy())
    model = faiss.Kmeans(
        x.shape[1],
        k,
        niter=n_iter,
        seed=0,
        max_points_per_centroid=len(data) + 1,
        min_points_per_centroid=1,
        verbose=False,
    )
    model.train(data, init_centroids=np.ascontiguousarray(init.cpu().numpy()))
    return torch.from_numpy(model.centroids).to(x.device)


def _torchpq():
    try:
        import torchpq.clustering as clustering
    except Exception as error:  # needs cupy and a GPU
        raise Unavailable(f"torchpq: {type(error).__name__}") from error
    return clustering


def peer_torchpq(x, k, n_iter, init, one_pass=False, **_):
    clustering = _torchpq()
    if one_pass:  # MISSRec's cluster_kmeans loop over TorchPQ MinibatchKMeans (one pass)
        model = clustering.MinibatchKMeans(n_clusters=k)
        for start, stop in reference_batches(len(x), k, 2048):
            model.fit_minibatch(x[start:stop].T.contiguous())
        return model.centroids.T.contiguous()
    if x.dim() == 3:
        model = clustering.MultiKMeans(n_clusters=k, max_iter=n_iter, tol=-1)
        model.fit(x.transpose(1, 2).contiguous(), centroids=init.transpose(1, 2).contiguous())
        return model.centroids.transpose(1, 2)
    model = clustering.KMeans(n_clusters=k, max_iter=n_iter, tol=-1)
    model.fit(x.T.contiguous(), centroids=init.T.contiguous())
    return model.centroids.T


def peer_fast_pytorch_kmeans(x, k, n_iter, init, one_pass=False, **_):
    if one_pass:
        raise Unavailable("no one-pass variant")
    try:
        import fast_pytorch_kmeans
    except ImportError as error:
        raise Unavailable("fast-pytorch-kmeans not installed") from error
    cls = fast_pytorch_kmeans.MultiKMeans if x.dim() == 3 else fast_pytorch_kmeans.KMeans
    model = cls(n_clusters=k, max_iter=n_iter, tol=-1, verbose=0)
    model.fit_predict(x, centroids=init.clone())
    return model.centroids


PEERS = {
    "ours": peer_ours,
    "ours, cuBLAS + min": peer_ours_unfused,
    "ours, TF32 pass": peer_ours_tf32_pass,
    "ours (cupy)": peer_ours_cupy,
    "TorchPQ": peer_torchpq,
    "fast-pytorch-kmeans": peer_fast_pytorch_kmeans,
    "faiss-cpu (all points)": peer_faiss,
    "plain torch Lloyd": peer_plain,
}


def gemm_floor(x, init, n_iter, device):
    """Time of the ``n_iter`` assignment products ``x @ C^T`` alone (TF32 on CUDA), in chunks of 32k rows."""
    x3 = x if x.dim() == 3 else x.unsqueeze(0)
    _, c = padded_operands(init if init.dim() == 3 else init.unsqueeze(0))  # k padded to a multiple of 8, as ours
    with matmul_precision("tf32", device):
        sync(device)
        start = time.perf_counter()
        for _ in range(n_iter):
            for r0 in range(0, x3.shape[1], 32768):
                torch.bmm(x3[:, r0 : r0 + 32768], c)
        sync(device)
    return time.perf_counter() - start


def run_regime(name, spec, device, reps, scale):
    k = max(2, int(spec["k"] * min(scale, 1.0)))
    n = max(k * 2, int(spec["n"] * scale))
    batch = spec["batch"] and max(1, int(spec["batch"] * scale))
    g = torch.Generator(device=device).manual_seed(0)
    shape = (batch, n, spec["d"]) if batch else (n, spec["d"])
    x = torch.randn(*shape, generator=g, device=device)
    n_iter, one_pass = spec["n_iter"], spec.get("one_pass", False)
    init = kmeans(x, k, n_iter=0, seed=0).centroids
    print(
        f"\n== regime {name}: {'%d problems of ' % batch if batch else ''}{n} x {spec['d']}, k={k}, "
        f"{'one reference pass' if one_pass else f'{n_iter} iterations'}, device {device} (target {TARGETS[name]})"
    )
    ref_iter = 1 if one_pass else n_iter
    if one_pass:
        ref_inertia = None  # the one-pass regime is compared with ours, not with Lloyd
    else:
        progress(f"{name}: float64 reference Lloyd")
        ref_inertia = inertia_of(x.double(), plain_lloyd(x.double(), init.double(), ref_iter, torch.float64))
    floor = min(gemm_floor(x, init, ref_iter, device) for _ in range(3))
    notes, times, results = {}, {peer: [] for peer in PEERS}, {}
    for peer, fn in PEERS.items():  # warm-up (kernel compilation, allocator); find the unavailable peers
        progress(f"{name}: warm-up {peer}")
        try:
            fn(x, k, n_iter, init, one_pass=one_pass)
        except Unavailable as why:
            notes[peer] = f"unavailable: {why}"
        except torch.OutOfMemoryError:
            notes[peer] = "failed: out of memory"
            torch.cuda.empty_cache()
    for _ in range(reps):  # round-robin, so that a change in machine load hits every peer alike
        for peer, fn in PEERS.items():
            if peer in notes:
                continue
            sync(device)
            start = time.perf_counter()
            results[peer] = fn(x, k, n_iter, init, one_pass=one_pass)
            sync(device)
            times[peer].append(time.perf_counter() - start)
    rows = []
    for peer in PEERS:
        if peer in notes:
            rows.append((peer, None, None, notes[peer]))
        else:
            rows.append((peer, statistics.median(times[peer]), inertia_of(x.double(), results[peer].double()), ""))
    ours_time = next(r[1] for r in rows if r[0] == "ours")
    ours_inertia = next(r[2] for r in rows if r[0] == "ours")
    print(f"{'peer':<32}{'time':>12}{'vs ours':>9}{'inertia / f64 Lloyd':>22}  note")
    for peer, elapsed, inertia, note in rows:
        if elapsed is None:
            print(f"{peer:<32}{'-':>12}{'-':>9}{'-':>22}  {note}")
            continue
        base = ref_inertia if ref_inertia is not None else ours_inertia
        label = "inertia / f64 Lloyd" if ref_inertia is not None else "inertia / ours"
        print(
            f"{peer:<32}{elapsed * 1000:>10.1f}ms{elapsed / ours_time:>8.2f}x{inertia / base:>22.5f}  {note or label}"
        )
    print(f"{'floor (GEMMs alone)':<32}{floor * 1000:>10.1f}ms{floor / ours_time:>8.2f}x")
    for key, config in fused_assign.autotuned_configs().items():  # the fused kernel ran: the tiles it uses
        print(f"fused kernel config for (d, k, ...) = {key}: {config}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", default="cpu", help="comma-separated subset of " + ",".join(REGIMES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply n, k and B (smoke runs)")
    parser.add_argument("--faiss-on-cuda", action="store_true", help="also time faiss-cpu in CUDA regimes (slow)")
    args = parser.parse_args()
    global WITH_FAISS_ON_CUDA
    WITH_FAISS_ON_CUDA = args.faiss_on_cuda
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    for name in args.regimes.split(","):
        run_regime(name, REGIMES[name], device, args.reps, args.scale)


if __name__ == "__main__":
    main()
