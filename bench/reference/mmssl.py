"""MMSSL beside the reference code (HKUDS/MMSSL) on identical files.

Three sub-commands::

    python bench/reference/mmssl.py convert --dataset-dir dataset/ml-100k_mm --out ref_data/ml100k \\
        --ours-data-path ref_ours
    python bench/reference/mmssl.py reference --reference /path/to/MMSSL --data ref_data --dataset ml100k \\
        --seed 2022 --epoch 30 --out runs/ref_2022.json
    python bench/reference/mmssl.py ours --data-path ref_ours --dataset ml100k --seed 2022 --epochs 30 \\
        [--reference-compat] --out runs/ours_2022.json

``convert`` writes the reference's input layout from a recbole_mm dataset folder with pre-split files
(``<name>.{train,valid,test}.inter``, either ``user_id item_id`` rows or leave-one-out ``user_id item_id_list
item_id`` rows) and its two feature files: ``train.json`` / ``val.json`` / ``test.json`` (user -> items, 0-based),
``train_mat`` (a pickled scipy CSR matrix of the training pairs), ``image_feat.npy`` and ``text_feat.npy``; then
``recbole_mm.prepare mmrec`` reads those same files back into atomic files for recbole_mm, so both sides train,
validate and test on the same pairs and features. Item tokens must be integers equal to the feature rows (the
recbole_mm layout: row i = item i); users are renumbered 0..U-1 in order of first appearance.

``reference`` executes the checkout's own ``MMSSL/main.py`` unmodified (``runpy``), with its own argument parser
(anything after ``--`` is passed to it). Patches applied at run time, none of which changes a number it computes:

- ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return the object itself: the code calls ``.cuda()`` on every
  tensor and module; on a CPU-only machine this keeps every tensor where it already is (on the CPU), and the
  arithmetic is the same.
- ``dgl`` and ``visdom`` are empty stand-in modules: ``main.py`` imports both at the top but never calls them
  (its two DGL helpers are dead code); neither installs beside current torch.
- ``utility.batch_test.cores`` (the evaluation pool size, ``cpu_count() // 5``, which is 0 on a 2-core machine and
  makes ``multiprocessing.Pool`` raise) is set to ``--workers`` (default 1): each user's metrics are computed by the
  same function whatever process runs it.
- ``utility.batch_test.test_torch`` is wrapped: the wrapper times each call and, on each test call (the reference
  tests only when validation Recall@20 improves, so the last one is the reported epoch), saves the user and item
  embeddings it was given (``<out>.emb.pt``); then it calls the original with the same arguments. The shim ranks
  those embeddings again with RecBole's metric classes (``ranked_by_recbole`` in the output).
- ``--debug`` is passed, so the reference's logger writes no file under its hard-coded home folder (it still prints).

``ours`` runs recbole_mm's MMSSL through ``recbole_mm.quick_start.run_recbole_mm`` with the reference's settings
(full ranking, Recall/NDCG/Precision/Hit at 10/20/50, selection and early stopping on validation Recall@20 with
patience 7, batches of 1,024, the model's defaults, which are the reference's): keys ``reference_compat``,
``train_batch_size``, ``stopping_step``, ``valid_metric``, ``topk``, ``metrics``, ``epochs``, ``seed``.
The trainer class is subclassed only to time ``_train_epoch`` and ``_valid_epoch``.

``--profile N`` (``reference`` and ``ours``) replaces the run by a profile of N training batches of the first
epoch, run plain, under ``torch.profiler`` and under ``cProfile`` (``bench/reference/common.py``,
``PhasedProfile``; on the reference side its own loop body runs N times per phase, its sampling labelled for the
profiler); ``--out`` receives the figures.

Both sides write one JSON with the test metrics, per-epoch training wall and CPU seconds, evaluation seconds,
epochs run and the process's peak resident memory.
"""

import json
import os
import pickle
import sys
import time
import types

import numpy as np

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
from bench.reference.common import (
    DATA_TAG,
    PhasedProfile,
    ProfileDone,
    add_run_options,
    git_head,
    ours_record,
    peak_rss_mib,
    profile_trainer_patch,
    recbole_metrics,
    shim_parser,
    write_json,
)

KS = [10, 20, 50]
PROFILE_HELP = "profile N training batches of the first epoch instead of the run (no result; --out gets the profile)"


# ----------------------------------------------------------------------------------------------------------- convert
def read_presplit(
    dataset_dir: str, name: str
) -> tuple[dict[str, dict[int, list[int]]], list[str]]:
    """``{"train"|"valid"|"test": {user token: [item token, ...]}}`` (items in file order, without repeats) and
    the user tokens in order of first appearance. Leave-one-out rows contribute their history to the training
    items (a user's first items are only ever in histories)."""
    parts: dict[str, dict[str, list[int]]] = {"train": {}, "valid": {}, "test": {}}
    users: dict[str, None] = {}
    for part in parts:
        path = os.path.join(dataset_dir, f"{name}.{part}.inter")
        if not os.path.isfile(path):
            raise SystemExit(
                f"convert: {path} not found (expected pre-split <name>.train/valid/test.inter files)"
            )
        with open(path, encoding="utf-8") as f:
            header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            if "user_id" not in header or "item_id" not in header:
                raise SystemExit(
                    f"convert: {path}: header needs user_id and item_id, found {header}"
                )
            iu, ii = header.index("user_id"), header.index("item_id")
            il = header.index("item_id_list") if "item_id_list" in header else None
            for n, line in enumerate(f, start=2):
                cols = line.rstrip("\n").split("\t")
                user = cols[iu]
                users.setdefault(user)
                try:
                    history = (
                        [int(t) for t in cols[il].split()] if il is not None else []
                    )
                    target = int(cols[ii])
                except ValueError:
                    raise SystemExit(
                        f"convert: {path} line {n}: item tokens must be integers (feature rows)"
                    )
                if (
                    il is not None and part != "test"
                ):  # histories are training items (a test history adds valid)
                    parts["train"].setdefault(user, []).extend(history)
                parts["train" if part == "train" else part].setdefault(user, []).append(
                    target
                )
    train = {u: list(dict.fromkeys(items)) for u, items in parts["train"].items()}
    for part in ("valid", "test"):
        for u, items in parts[part].items():
            overlap = set(items) & set(train.get(u, []))
            if overlap:
                raise SystemExit(
                    f"convert: user {u}: {part} items {sorted(overlap)[:5]} are also training items"
                )
    return {"train": train, "valid": parts["valid"], "test": parts["test"]}, list(users)


def read_feature(dataset_dir: str, name: str, suffix: str) -> np.ndarray:
    """The raw float32 feature file ``<name>.<suffix>`` as [rows, dim] (dim from its ``.json`` sidecar)."""
    path = os.path.join(dataset_dir, f"{name}.{suffix}")
    with open(path + ".json", encoding="utf-8") as f:
        dim = int(json.load(f)["dim"])
    data = np.fromfile(path, dtype=np.float32)
    if data.size % dim:
        raise SystemExit(
            f"convert: {path}: {data.size} floats is not a whole number of rows of {dim}"
        )
    return data.reshape(-1, dim)


def convert(args) -> None:
    import scipy.sparse as sp

    from recbole_mm.prepare.common import write_config
    from recbole_mm.prepare.mmrec import convert_mmrec

    parts, users = read_presplit(args.dataset_dir, args.name)
    image = read_feature(args.dataset_dir, args.name, args.image_suffix)
    text = read_feature(args.dataset_dir, args.name, args.text_suffix)
    if image.shape[0] != text.shape[0]:
        raise SystemExit(
            f"convert: feature rows differ: image {image.shape[0]}, text {text.shape[0]}"
        )
    n_items = image.shape[0]
    uid = {u: i for i, u in enumerate(users)}
    top = max(max(items) for p in parts.values() for items in p.values())
    if top >= n_items:
        raise SystemExit(
            f"convert: item {top} has no feature row (the feature files have {n_items} rows)"
        )
    os.makedirs(args.out, exist_ok=True)
    for part, fname in (
        ("train", "train.json"),
        ("valid", "val.json"),
        ("test", "test.json"),
    ):
        with open(os.path.join(args.out, fname), "w", encoding="utf-8") as f:
            json.dump({str(uid[u]): items for u, items in parts[part].items()}, f)
    rows = [uid[u] for u, items in parts["train"].items() for _ in items]
    cols = [i for items in parts["train"].values() for i in items]
    mat = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)),
        shape=(len(users), n_items),
    )
    with open(os.path.join(args.out, "train_mat"), "wb") as f:
        pickle.dump(mat, f)
    np.save(os.path.join(args.out, "image_feat.npy"), image)
    np.save(os.path.join(args.out, "text_feat.npy"), text)
    with open(os.path.join(args.out, "user_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(users, f)
    print(
        f"convert: {len(users)} users, {n_items} items, {mat.nnz} training pairs -> {args.out}"
    )
    if args.ours_data_path:
        name = os.path.basename(os.path.normpath(args.out))
        target, report = convert_mmrec(
            args.out, args.ours_data_path, name
        )  # as `python -m recbole_mm.prepare mmrec`
        print(report.line())
        write_config(target, name, sequential=False)
        print(f"convert: recbole_mm atomic files in {target}")


# --------------------------------------------------------------------------------------------------------- reference
def rank_dump(emb_path: str, data_dir: str) -> dict:
    """The reference's final user/item embeddings ranked with RecBole's metric classes: scores u . i over every
    item, training items masked (the reference's mask) and, separately, training and validation items masked
    (RecBole's full sort at test); ``torch.topk`` order."""
    import torch

    dump = torch.load(emb_path)
    users_emb, items_emb = dump["user"], dump["item"]
    sets = {}
    for key, fname in (
        ("train", "train.json"),
        ("valid", "val.json"),
        ("test", "test.json"),
    ):
        with open(os.path.join(data_dir, fname), encoding="utf-8") as f:
            sets[key] = {int(u): v for u, v in json.load(f).items() if v}
    test_users = sorted(sets["test"])
    scores = users_emb[test_users] @ items_emb.T
    out = {}
    for label, masked in (
        ("mask_train", ("train",)),
        ("mask_train_valid", ("train", "valid")),
    ):
        s = scores.clone()
        for row, u in enumerate(test_users):
            for part in masked:
                s[row, sets[part].get(u, [])] = -np.inf
        top = torch.topk(s, max(KS), dim=1).indices
        truth = torch.zeros_like(s, dtype=torch.bool)
        for row, u in enumerate(test_users):
            truth[row, sets["test"][u]] = True
        hits = torch.gather(truth, 1, top)
        pos_len = truth.sum(1)
        out[label] = recbole_metrics(
            hits, pos_len, ["Recall", "NDCG", "Precision", "Hit"], KS
        )
    return out


def run_reference(args, passthrough: list[str]) -> None:
    import runpy

    import torch

    code = os.path.join(os.path.abspath(args.reference), "MMSSL")
    if not os.path.isfile(os.path.join(code, "main.py")):
        raise SystemExit(
            f"reference: {code}/main.py not found (--reference is the root of an HKUDS/MMSSL checkout)"
        )
    torch.set_num_threads(args.threads)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    for stub in ("dgl", "visdom"):
        sys.modules.setdefault(stub, types.ModuleType(stub))
    data = os.path.abspath(args.data) + os.sep
    sys.argv = [
        os.path.join(code, "main.py"),
        "--data_path",
        data,
        "--dataset",
        args.dataset,
        "--seed",
        str(args.seed),
        "--epoch",
        str(args.epoch),
        "--debug",
    ] + passthrough
    sys.path.insert(0, code)
    import utility.batch_test as bt  # parses sys.argv and reads the json files, as main.py's import does

    bt.cores = args.workers
    original = bt.test_torch
    calls, last = [], {}
    emb_path = os.path.splitext(args.out)[0] + ".emb.pt"

    def timed_test_torch(ua_embeddings, ia_embeddings, users_to_test, is_val, *a, **k):
        start, cpu = time.perf_counter(), time.process_time()
        if not is_val:
            torch.save(
                {
                    "user": ua_embeddings.detach().clone(),
                    "item": ia_embeddings.detach().clone(),
                },
                emb_path,
            )
        result = original(ua_embeddings, ia_embeddings, users_to_test, is_val, *a, **k)
        calls.append(
            {
                "val": bool(is_val),
                "start": start,
                "end": time.perf_counter(),
                "cpu": time.process_time() - cpu,
                "recall": [float(x) for x in result["recall"]],
            }
        )
        if not is_val:
            last["test"] = {
                k2: [float(x) for x in result[k2]]
                for k2 in ("recall", "precision", "ndcg", "hit_ratio")
            }
        return result

    bt.test_torch = timed_test_torch
    regions = {}
    if args.profile:
        profile_reference_batches(args.profile, bt, regions)
    t0 = time.perf_counter()
    try:
        runpy.run_path(os.path.join(code, "main.py"), run_name="__main__")
    except ProfileDone:
        write_profile(args, "reference", regions, argv=sys.argv[1:], reference_commit=git_head(args.reference))
        return
    total = time.perf_counter() - t0
    # an epoch's training = from the end of the previous epoch's last evaluation to this epoch's validation
    train_s, prev_end = [], None
    for c in calls:
        if c["val"] and prev_end is not None:
            train_s.append(c["start"] - prev_end)
        prev_end = c["end"]
    val = [c for c in calls if c["val"]]
    result = {
        "side": "reference",
        "reference_commit": git_head(args.reference),
        "seed": args.seed,
        "epochs_run": len(val),
        "epoch_cap": args.epoch,
        "best_epoch": 1 + int(np.argmax([c["recall"][1] for c in val]))
        if val
        else None,
        "valid_recall@20": [c["recall"][1] for c in val],
        "reported_test": {
            f"{m}@{k}": v[i]
            for m, v in last.get("test", {}).items()
            for i, k in enumerate(KS)
        },
        "ranked_by_recbole": rank_dump(emb_path, args.data + "/" + args.dataset)
        if last
        else None,
        "train_epoch_wall_s (epochs 2..)": train_s,
        "valid_pass_wall_s": [c["end"] - c["start"] for c in val],
        "total_wall_s": total,
        "peak_rss_mib": peak_rss_mib(),
        "threads": args.threads,
        "argv": sys.argv[1:],
    }
    write_json(args.out, result)
    print(
        json.dumps(
            {k: result[k] for k in ("reported_test", "epochs_run", "best_epoch")},
            indent=1,
        )
    )



def profile_reference_batches(n: int, bt, regions: dict) -> None:
    """``--profile``: the reference's first training loop (``for idx in tqdm(range(n_batch))`` in ``main.py``) runs
    ``n`` batches once per :class:`bench.reference.common.PhasedProfile` phase, then the run ends
    (:class:`bench.reference.common.ProfileDone`); its sampling call ``data_generator.sample`` is labelled
    ``DATA_TAG`` for the profiler. ``main.py`` reads ``tqdm`` from the ``tqdm`` module when it runs, so replacing
    the module's attribute before it runs is enough; the loop body is the reference's, unchanged."""
    import tqdm
    from torch.profiler import record_function

    data_cls = type(bt.data_generator)
    original_sample, original_tqdm = data_cls.sample, tqdm.tqdm

    def sample(self, *a, **k):
        with record_function(DATA_TAG):
            return original_sample(self, *a, **k)

    def phased(iterable):
        p = PhasedProfile()
        for phase in p.PHASES:
            p.start(phase)
            yield from range(n)
            p.stop(n * bt.args.batch_size if phase == "plain" else None)
        regions["train"] = dict(p.out, batches=n, batches_per_epoch=len(iterable))
        raise ProfileDone

    def bounded_tqdm(iterable=None, *a, **k):
        if isinstance(iterable, range) and "train" not in regions:
            return phased(iterable)
        return original_tqdm(iterable, *a, **k)

    data_cls.sample = sample
    tqdm.tqdm = bounded_tqdm


def write_profile(args, side: str, regions: dict, **extra) -> None:
    """The ``--profile`` record: the ``train`` region's figures (:class:`bench.reference.common.PhasedProfile`)."""
    import torch

    payload = {"side": side, "model": "MMSSL", "seed": args.seed, "threads": args.threads,
               "torch": torch.__version__, "load_average": os.getloadavg(), "regions": regions, **extra}
    write_json(args.out, payload)
    print(json.dumps({r: {k: v.get(k) for k in ("cpu_s", "rows", "shares")} for r, v in regions.items()}, indent=1))


# -------------------------------------------------------------------------------------------------------------- ours
def timed_trainer_patch(times: dict[str, list]) -> None:
    """Make ``run_recbole_mm`` build its trainer as a subclass that times ``_train_epoch`` and ``_valid_epoch``."""
    import recbole_mm.quick_start as qs

    original = qs.get_trainer

    def get_timed_trainer(*a, **k):
        base = original(*a, **k)

        class Timed(base):
            def _train_epoch(self, *args, **kwargs):
                t, c = time.perf_counter(), time.process_time()
                out = super()._train_epoch(*args, **kwargs)
                times["train_wall"].append(time.perf_counter() - t)
                times["train_cpu"].append(time.process_time() - c)
                return out

            def _valid_epoch(self, *args, **kwargs):
                t, c = time.perf_counter(), time.process_time()
                out = super()._valid_epoch(*args, **kwargs)
                times["valid_wall"].append(time.perf_counter() - t)
                times.setdefault("valid_cpu", []).append(time.process_time() - c)
                return out

        Timed.__name__ = base.__name__
        return Timed

    qs.get_trainer = get_timed_trainer


def run_ours(args) -> None:
    import torch

    from recbole_mm.quick_start import run_recbole_mm

    torch.set_num_threads(args.threads)
    times = {"train_wall": [], "train_cpu": [], "valid_wall": []}
    timed_trainer_patch(times)
    folder = os.path.join(os.path.abspath(args.data_path), args.dataset)
    settings = {
        "data_path": os.path.abspath(args.data_path),
        "seed": args.seed,
        "epochs": args.epochs,
        "reference_compat": args.reference_compat,
        "show_progress": False,
        "checkpoint_dir": args.checkpoint_dir,
    }
    if not args.our_protocol:
        settings.update(
            {
                "train_batch_size": args.batch_size,
                "stopping_step": 7,
                "valid_metric": "Recall@20",
                "topk": KS,
                "metrics": ["Recall", "NDCG", "Precision", "Hit"],
            }
        )
    t0 = time.perf_counter()
    config_files = [os.path.join(folder, f"{args.dataset}.yaml")]
    if args.profile:
        if args.reference_compat:
            raise SystemExit("ours: --profile bounds RecBole's training batches, which reference_compat replaces")
        regions = {}
        profile_trainer_patch(args.profile, regions, evaluate=False)
        try:
            run_recbole_mm("MMSSL", args.dataset, config_files, settings)
        except ProfileDone:
            write_profile(args, "ours", regions, settings=settings)
            return
        raise SystemExit("ours: --profile: the trainer's fit was never called")
    result = run_recbole_mm("MMSSL", args.dataset, config_files, settings)
    total = time.perf_counter() - t0
    out = ours_record(args, settings, result, times, total)
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("test", "epochs_run")}, indent=1))


def main(argv=None) -> None:
    parser, sub, argv, passthrough = shim_parser(__doc__, argv)
    c = sub.add_parser(
        "convert",
        help="a recbole_mm dataset folder to the MMSSL json/train_mat/npy layout",
    )
    c.add_argument(
        "--dataset-dir",
        required=True,
        help="folder with <name>.{train,valid,test}.inter and features",
    )
    c.add_argument(
        "--name", default=None, help="dataset name (default: the folder's name)"
    )
    c.add_argument(
        "--out", required=True, help="output folder <data>/<dataset> for the reference"
    )
    c.add_argument(
        "--image-suffix",
        default="feat3CLS",
        help="feature file of the image slot (ml-100k_mm: feat3CLS)",
    )
    c.add_argument(
        "--text-suffix",
        default="feat1CLS",
        help="feature file of the text slot (ml-100k_mm: feat1CLS)",
    )
    c.add_argument(
        "--ours-data-path",
        default=None,
        help="also write recbole_mm atomic files under this data_path",
    )
    r = sub.add_parser(
        "reference", help="run the reference's main.py (arguments after -- go to it)"
    )
    r.add_argument("--reference", required=True, help="root of an HKUDS/MMSSL checkout")
    r.add_argument(
        "--data",
        required=True,
        help="the reference's --data_path (parent of the dataset folder)",
    )
    r.add_argument("--dataset", required=True)
    r.add_argument("--seed", type=int, default=2022)
    r.add_argument("--epoch", type=int, default=1000)
    r.add_argument(
        "--workers",
        type=int,
        default=1,
        help="evaluation pool size (the reference: cpu_count() // 5)",
    )
    add_run_options(r, PROFILE_HELP, "result JSON (embeddings beside it, .emb.pt)")
    o = sub.add_parser("ours", help="run recbole_mm's MMSSL on the converted files")
    o.add_argument(
        "--data-path",
        required=True,
        help="data_path holding the converted atomic files",
    )
    o.add_argument("--dataset", required=True)
    o.add_argument("--seed", type=int, default=2022)
    o.add_argument("--epochs", type=int, default=1000)
    o.add_argument(
        "--reference-compat", action="store_true", help="reference_compat: True"
    )
    o.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="train_batch_size (the reference's 1,024)",
    )
    o.add_argument(
        "--our-protocol",
        action="store_true",
        help="keep the dataset preset's evaluation settings",
    )
    o.add_argument("--checkpoint-dir", default="saved/reference_bench")
    add_run_options(o, PROFILE_HELP)
    args = parser.parse_args(argv)
    if args.cmd == "convert":
        args.name = args.name or os.path.basename(os.path.normpath(args.dataset_dir))
        convert(args)
    elif args.cmd == "reference":
        run_reference(args, passthrough)
    else:
        run_ours(args)


if __name__ == "__main__":
    main()
