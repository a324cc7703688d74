"""SEMINAR, TWIN and SIM beside the reference code (paper-submission-coder/SEMINAR) on identical files.

Sub-commands::

    python bench/reference/seminar.py convert --dataset-dir dataset/ml-100k_mm --out ref_data --name ml100k \\
        --ours-data-path ref_ours
    python bench/reference/seminar.py reference --reference /path/to/SEMINAR --data ref_data --name ml100k \\
        --model twin --seed 42 --out runs/ref_twin.json [-- <more reference arguments>]
    python bench/reference/seminar.py ours --data-path ref_ours --name ml100k --model TWIN --negatives \\
        ref_data/ml100k_sample.txt --seed 42 --out runs/ours_twin.json [--reference-compat] [--set key=value ...]

``convert`` writes the reference's S3Rec-style files from a recbole_mm dataset folder with leave-one-out
pre-split files (``<name>.{train,valid,test}.inter`` with ``item_id_list``), its ``.item`` dummy queries and its
two feature files: ``<D>.txt`` (each user's whole time-ordered sequence, rebuilt from the training prefixes and the
two held-out targets; item ids + 1, as 0 is the reference's padding), ``<D>_queries.txt`` (each interaction's query
= its item's dummy query, keyword ids from 1, at most 5), ``<D>_sample.txt`` (99 fixed negatives per user, uniform
over the items outside the user's sequence, seeded), ``<D>_sample_queries.txt`` (their dummy queries),
``<D>_id2dummy_query.json``, ``<D>_item2attributes.json`` (read but unused by these models) and
``<D>_id2image_emb.pth`` / ``<D>_id2title_emb.pth`` (``{item id: tensor [1, d]}``).

``reverse`` (also run by ``convert --ours-data-path``) reads those files back into recbole_mm's long-sequence layout
(``<D>.inter`` with ``user_id item_id timestamp query``, the timestamp being the position in the sequence, ``.item``
dummy queries, ``feat3CLS``/``feat1CLS`` features, a preset), so recbole_mm's models read the identical sequences
and queries; ``ours --negatives <D>_sample.txt`` makes RecBole's validation and test use the identical 99
negatives per user (RecBole's sampler returns them in its own layout; training negatives stay uniform).

``reference`` executes the checkout's own ``run_seminar_model.py`` unmodified (``runpy``) with its own argument
parser (``--data_dir``, ``--data_name``, ``--model_type``, ``--max_seq_length``, ``--retrieve_topK``, ``--epochs``,
``--multi_modal_emb_enable``...; anything after ``--`` goes to it). Patches applied at run time, none of which
changes a number it computes:

- ``MultiModalFinetuneTrainer.iteration`` with ``train=False`` runs under ``torch.no_grad()``: the reference
  validates after each epoch with autograd on; the scores are the same, only no graph is kept.
- ``MultiModalFinetuneTrainer.iteration`` is timed (training rows per second, evaluation pass seconds), and
  ``get_sample_scores`` saves the [users, 100] score matrix it receives (column 0 = the positive) before ranking
  it as the reference does; the shim ranks those scores again with RecBole's metric classes, ties counted for
  and against the positive (``ranked_by_recbole``).

Nothing else is patched: the reference runs on the CPU by itself (``cuda_condition`` is False without a GPU).
Its known defects run as they are (one training sample per user per epoch, the CLIP tables overwritten by the
random init, the unregistered Q/K/V projections, the pre-training loss signs).

``ours`` runs recbole_mm's model through ``recbole_mm.quick_start.run_recbole_mm`` on the reversed dataset with
the reference's settings: keys ``MAX_ITEM_LIST_LENGTH``, ``retrieve_topk``, ``num_heads``, ``hidden_size``,
``learning_rate``, ``objective`` (bce) and ``train_neg_sample_args`` (one uniform negative), ``train_batch_size``,
``epochs``, ``stopping_step``, ``eval_args`` (uni99), ``metrics``, ``topk``, ``valid_metric``,
``reference_compat``, ``seed``; the candidates' query mode is left at the model's default (recommendation: empty
candidate queries, the reference's ``test_set_mode``). ``--config-file`` adds YAML files after the dataset's preset
(SEMINAR's two stages: ``recbole_mm/properties/props/SEMINAR/pretrain.yaml``, then ``finetune.yaml`` with
``--set pretrained_path=<the saved_model_file of the pre-training record>``); ``--set key=value`` adds settings
(values parsed as YAML) that override both. The trainer class is subclassed only to time ``_train_epoch`` and
``_valid_epoch``; RecBole's ``Sampler.sample_by_user_ids`` is replaced, in the valid and test phases only, by a
lookup of the fixed negatives.

``--profile N`` (``reference`` and ``ours``) replaces the run by a profile: N training batches (the loader restarted
as often as needed) and one validation pass, each run plain, under ``torch.profiler`` and under ``cProfile``
(``bench/reference/common.py``, ``PhasedProfile``); ``--out`` receives the figures.
"""

import json
import os
import random
import sys
import time

import numpy as np

sys.path.insert(
    0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
from bench.reference.common import (
    BoundedLoader,
    ProfileDone,
    add_run_options,
    git_head,
    ours_record,
    peak_rss_mib,
    profile_region,
    profile_trainer_patch,
    recbole_metrics,
    shim_parser,
    write_json,
)

KS = [1, 5, 10, 50]
N_NEG = 99
PROFILE_HELP = (
    "profile N training batches and one validation pass instead of the run (no result; --out gets the profile)"
)


# ----------------------------------------------------------------------------------------------------------- convert
def full_sequences(dataset_dir: str, name: str) -> dict[str, list[int]]:
    """Each user's whole sequence from leave-one-out pre-split files: the first training row's history, every
    training row's target in file order, then the validation and test targets."""
    seqs: dict[str, list[int]] = {}
    for part in ("train", "valid", "test"):
        path = os.path.join(dataset_dir, f"{name}.{part}.inter")
        with open(path, encoding="utf-8") as f:
            header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            if not {"user_id", "item_id_list", "item_id"} <= set(header):
                raise SystemExit(
                    f"convert: {path}: expected user_id, item_id_list, item_id columns, found {header}"
                )
            iu, il, ii = (
                header.index("user_id"),
                header.index("item_id_list"),
                header.index("item_id"),
            )
            for line in f:
                cols = line.rstrip("\n").split("\t")
                user = cols[iu]
                if user not in seqs:
                    seqs[user] = [int(t) for t in cols[il].split()]
                seqs[user].append(int(cols[ii]))
    for user, seq in seqs.items():
        if len(set(seq)) != len(seq):
            raise SystemExit(
                f"convert: user {user}: an item repeats in the sequence (the reference's negatives "
                "exclude the whole sequence, so repeats are not supported)"
            )
    return seqs


def read_dummy_queries(
    dataset_dir: str, name: str, limit: int = 5
) -> dict[int, list[str]]:
    path = os.path.join(dataset_dir, f"{name}.item")
    out = {}
    with open(path, encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        if "dummy_query" not in header:
            raise SystemExit(f"convert: {path} has no dummy_query column")
        ii, iq = header.index("item_id"), header.index("dummy_query")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            out[int(cols[ii])] = cols[iq].split()[:limit]
    return out


def convert(args) -> None:
    import torch

    from bench.reference.mmssl import read_feature

    src = args.source_name
    seqs = full_sequences(args.dataset_dir, src)
    dummy = read_dummy_queries(args.dataset_dir, src)
    image = read_feature(args.dataset_dir, src, args.image_suffix)
    text = read_feature(args.dataset_dir, src, args.text_suffix)
    n_items = image.shape[0]
    vocab: dict[str, int] = {}
    query_of = {}
    for item in range(n_items):
        ids = [vocab.setdefault(w, len(vocab) + 1) for w in dummy.get(item, [])]
        query_of[item + 1] = ",".join(map(str, ids)) if ids else "0"
    rng = random.Random(args.seed)
    d = os.path.join(args.out, args.name)
    os.makedirs(args.out, exist_ok=True)
    users = list(seqs)
    with (
        open(d + ".txt", "w") as ft,
        open(d + "_queries.txt", "w") as fq,
        open(d + "_sample.txt", "w") as fs,
        open(d + "_sample_queries.txt", "w") as fsq,
    ):
        for uid, user in enumerate(users, start=1):
            seq = [i + 1 for i in seqs[user]]
            ft.write(f"{uid} " + " ".join(map(str, seq)) + "\n")
            fq.write(f"{uid} " + " ".join(query_of[i] for i in seq) + "\n")
            seen, negs = set(seq), []
            while len(negs) < N_NEG:
                cand = rng.randint(1, n_items)
                if cand not in seen:
                    seen.add(cand)
                    negs.append(cand)
            fs.write(f"{uid} " + " ".join(map(str, negs)) + "\n")
            fsq.write(f"{uid} " + " ".join(query_of[i] for i in negs) + "\n")
    with open(d + "_id2dummy_query.json", "w") as f:
        json.dump({str(i): q for i, q in query_of.items()}, f)
    with open(d + "_item2attributes.json", "w") as f:
        json.dump({str(i): [1] for i in range(1, n_items + 1)}, f)
    torch.save(
        {str(i + 1): torch.from_numpy(image[i : i + 1].copy()) for i in range(n_items)},
        d + "_id2image_emb.pth",
    )
    torch.save(
        {str(i + 1): torch.from_numpy(text[i : i + 1].copy()) for i in range(n_items)},
        d + "_id2title_emb.pth",
    )
    with open(d + "_user_tokens.json", "w") as f:
        json.dump(users, f)
    print(
        f"convert: {len(users)} users, {n_items} items, {len(vocab)} query keywords, "
        f"{sum(map(len, seqs.values()))} interactions -> {args.out} (feature width {image.shape[1]})"
    )
    if args.ours_data_path:
        reverse(args.out, args.name, args.ours_data_path, args.max_len)


def reverse(ref_dir: str, name: str, data_path: str, max_len: int) -> str:
    """The reference's files ``<ref_dir>/<name>*`` to recbole_mm's long-sequence layout under ``data_path``."""
    import pandas as pd
    import torch

    from recbole_mm.data.atomic_files import write_feature_file
    from recbole_mm.prepare.long_sequence import (
        write_long_sequence_dataset,
        write_preset,
    )

    d = os.path.join(ref_dir, name)
    rows, users, max_item = [], [], 0
    with open(d + ".txt") as ft, open(d + "_queries.txt") as fq:
        for line, qline in zip(ft, fq):
            user, *items = line.split()
            quser, *queries = qline.split()
            if quser != user or len(queries) != len(items):
                raise SystemExit(
                    f"reverse: user {user}: {len(items)} items but {len(queries)} queries"
                )
            u = len(users)
            users.append(user)
            for pos, (item, q) in enumerate(zip(items, queries)):
                words = " ".join(w for w in q.split(",") if w and w != "0")
                rows.append((u, int(item), pos, words))
                max_item = max(max_item, int(item))
    item_ids = [str(i) for i in range(1, max_item + 1)]  # index i = reference id i + 1
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp", "query"])
    inter["item"] -= 1
    dummy_path = d + "_id2dummy_query.json"
    dummy = None
    if os.path.isfile(dummy_path):
        with open(dummy_path) as f:
            dq = json.load(f)
        dummy = [
            " ".join(w for w in dq.get(i, "0").split(",") if w and w != "0")
            for i in item_ids
        ]
    target, _ = write_long_sequence_dataset(
        data_path, name, inter, users, item_ids, dummy_queries=dummy, max_len=max_len
    )
    for pth, suffix in (
        ("_id2title_emb.pth", "feat1CLS"),
        ("_id2image_emb.pth", "feat3CLS"),
    ):
        if os.path.isfile(d + pth):
            table = torch.load(d + pth)
            dim = next(iter(table.values())).numel()
            rows_ = np.zeros(
                (len(item_ids), dim), dtype=np.float32
            )  # items without a vector: zero rows
            for i, key in enumerate(item_ids):
                if key in table:
                    rows_[i] = table[key].reshape(-1).float().numpy()
            write_feature_file(
                os.path.join(target, f"{name}.{suffix}"),
                rows_,
                encoder=f"from {os.path.basename(d)}{pth}",
            )
    write_preset(target, name, max_len)
    print(
        f"reverse: {len(users)} users, {len(item_ids)} items, {len(inter)} interactions -> {target}"
    )
    return target


# --------------------------------------------------------------------------------------------------------- reference
def rank_scores(scores: np.ndarray) -> dict:
    """[U, 100] scores, column 0 the positive, ranked with RecBole's metric classes: ``pessimistic`` counts every
    negative scoring >= the positive above it, ``optimistic`` only those scoring > it (the reference's argsort
    order lies between)."""
    import torch

    s = torch.from_numpy(scores)
    out = {}
    for label, beats in (
        ("ties_against_positive", s[:, 1:] >= s[:, :1]),
        ("ties_for_positive", s[:, 1:] > s[:, :1]),
    ):
        rank = beats.sum(1)
        hits = torch.arange(max(KS)).view(1, -1) == rank.view(-1, 1)
        out[label] = recbole_metrics(
            hits, torch.ones(len(s), dtype=torch.long), ["Hit", "NDCG", "MRR"], KS
        )
    out["tied_users"] = int(((s[:, 1:] == s[:, :1]).any(1)).sum())
    return out


def run_reference(args, passthrough: list[str]) -> None:
    import runpy

    import torch

    code = os.path.abspath(args.reference)
    script = os.path.join(code, "run_seminar_model.py")
    if not os.path.isfile(script):
        raise SystemExit(
            f"reference: {script} not found (--reference is the root of a SEMINAR checkout)"
        )
    torch.set_num_threads(args.threads)
    out_dir = os.path.splitext(args.out)[0] + "_output"
    os.makedirs(out_dir, exist_ok=True)
    sys.argv = [
        script,
        "--data_dir",
        os.path.abspath(args.data) + os.sep,
        "--data_name",
        args.name,
        "--model_type",
        args.model,
        "--seed",
        str(args.seed),
        "--output_dir",
        out_dir + os.sep,
        "--model_name",
        f"{args.name}_{args.model}_{args.seed}",
    ] + passthrough
    sys.path.insert(0, code)
    import trainers  # the module run_seminar_model.py imports; patched before it runs

    cls = trainers.MultiModalFinetuneTrainer
    original_iteration, original_scores = cls.iteration, cls.get_sample_scores
    log = {"train": [], "eval": [], "scores": []}

    def iteration(self, epoch, dataloader, full_sort=False, train=True):
        if args.profile:
            return profiled_iteration(self, epoch, dataloader, full_sort, train)
        start, cpu = time.perf_counter(), time.process_time()
        if train:
            out = original_iteration(self, epoch, dataloader, full_sort, train)
        else:
            with torch.no_grad():
                out = original_iteration(self, epoch, dataloader, full_sort, train)
        log["train" if train else "eval"].append(
            {
                "s": time.perf_counter() - start,
                "cpu": time.process_time() - cpu,
                "rows": len(dataloader.dataset),
                "mode": getattr(dataloader.dataset, "data_type", "?"),
            }
        )
        return out

    def get_sample_scores(self, epoch, pred_list):
        log["scores"].append(np.array(pred_list, copy=True))
        return original_scores(self, epoch, pred_list)

    regions = {}

    def profiled_iteration(self, epoch, dataloader, full_sort, train):
        if train:
            loader = BoundedLoader(dataloader, args.profile, lambda batch: int(batch[0].shape[0]))

            def run():
                loader.rows = 0
                original_iteration(self, epoch, loader, full_sort, True)

            regions["train"] = profile_region(run, rows=lambda: loader.rows)
            regions["train"]["batches"] = args.profile
            return None
        with torch.no_grad():
            regions["eval"] = profile_region(lambda: original_iteration(self, epoch, dataloader, full_sort, False))
        regions["eval"]["users"] = len(dataloader.dataset)
        raise ProfileDone

    cls.iteration, cls.get_sample_scores = iteration, get_sample_scores
    t0 = time.perf_counter()
    try:
        runpy.run_path(script, run_name="__main__")
    except ProfileDone:
        write_profile(args, "reference", regions, argv=sys.argv[1:], reference_commit=git_head(code))
        return
    total = time.perf_counter() - t0
    evals = [e for e in log["eval"]]
    test_scores = (
        log["scores"][-1] if log["scores"] else None
    )  # the last call is the test of the best checkpoint
    valid = [rank_scores(s)["ties_against_positive"] for s in log["scores"][:-1]]
    if test_scores is not None:
        np.save(os.path.splitext(args.out)[0] + ".test_scores.npy", test_scores)
    train_rows = sum(t["rows"] for t in log["train"])
    train_s = sum(t["s"] for t in log["train"])
    result = {
        "side": "reference",
        "model": args.model,
        "reference_commit": git_head(code),
        "seed": args.seed,
        "argv": sys.argv[1:],
        "epochs_run": len(log["train"]),
        "valid_ndcg@50_per_epoch": [v.get("ndcg@50") for v in valid],
        "test_ranked_by_recbole": rank_scores(test_scores)
        if test_scores is not None
        else None,
        "train_rows": train_rows,
        "train_wall_s": train_s,
        "train_rows_per_s": train_rows / train_s if train_s else None,
        "train_cpu_s": sum(t["cpu"] for t in log["train"]),
        "eval_pass_cpu_s": [e["cpu"] for e in evals],
        "eval_pass_wall_s": [e["s"] for e in evals],
        "eval_rows": [e["rows"] for e in evals],
        "total_wall_s": total,
        "peak_rss_mib": peak_rss_mib(),
        "threads": args.threads,
    }
    write_json(args.out, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("test_ranked_by_recbole", "epochs_run", "train_rows_per_s")
            },
            indent=1,
        )
    )



def write_profile(args, side: str, regions: dict, **extra) -> None:
    """The ``--profile`` record: per region (``train``: ``--profile`` batches; ``eval``: one validation pass) the
    figures of :class:`bench.reference.common.PhasedProfile`."""
    import torch

    payload = {"side": side, "model": args.model, "seed": args.seed, "threads": args.threads,
               "torch": torch.__version__, "load_average": os.getloadavg(), "regions": regions, **extra}
    write_json(args.out, payload)
    print(json.dumps({r: {k: v.get(k) for k in ("cpu_s", "rows", "shares")} for r, v in regions.items()}, indent=1))


# -------------------------------------------------------------------------------------------------------------- ours
def fixed_negatives_patch(sample_file: str) -> None:
    """RecBole's sampler returns, in the valid and test phases, each user's fixed negatives from the reference's
    ``<D>_sample.txt`` (user tokens are the reference's user ids; item ids are mapped to recbole_mm's tokens, id - 1
    being the item index) in RecBole's layout (``num`` rounds over the batch's users)."""
    import torch
    from recbole.sampler import Sampler

    fixed = {}
    with open(sample_file) as f:
        for line in f:
            user, *items = line.split()
            fixed[str(int(user) - 1)] = [
                str(int(i) - 1) for i in items
            ]  # tokens are 0-based indices
    original = Sampler.sample_by_user_ids
    cache = {}

    def sample_by_user_ids(self, user_ids, item_ids, num):
        if getattr(self, "phase", None) not in ("valid", "test"):
            return original(self, user_ids, item_ids, num)
        if num != N_NEG:
            raise SystemExit(
                f"ours: {num} negatives asked per user, the fixed file has {N_NEG} (set eval mode uni99)"
            )
        ds = self.datasets[0]
        if "table" not in cache:
            users = ds.field2id_token[ds.uid_field]
            table = np.zeros((len(users), N_NEG), dtype=np.int64)
            for uid, token in enumerate(users):
                if token in fixed:
                    table[uid] = ds.token2id(ds.iid_field, fixed[token])
            cache["table"] = table
        rows = cache["table"][np.asarray(user_ids)]  # [B, num]
        return torch.from_numpy(rows.T.reshape(-1).copy())

    Sampler.sample_by_user_ids = sample_by_user_ids


def run_ours(args) -> None:
    import torch
    import yaml

    from bench.reference.mmssl import timed_trainer_patch
    from recbole_mm.quick_start import run_recbole_mm

    torch.set_num_threads(args.threads)
    times = {"train_wall": [], "train_cpu": [], "valid_wall": []}
    timed_trainer_patch(times)
    if args.negatives:
        fixed_negatives_patch(args.negatives)
    folder = os.path.join(os.path.abspath(args.data_path), args.name)
    settings = {
        "data_path": os.path.abspath(args.data_path),
        "seed": args.seed,
        "epochs": args.epochs,
        "stopping_step": args.stopping_step,
        "reference_compat": args.reference_compat,
        "show_progress": False,
        "checkpoint_dir": args.checkpoint_dir,
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "retrieve_topk": args.topk,
        "num_heads": 4,
        "hidden_size": 64,
        "learning_rate": 1e-3,
        "objective": "bce",  # the reference's loss: pointwise BCE, one uniform negative per row
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        "train_batch_size": 256,  # rows per step as RecBole counts them (one copy per negative): 256 histories
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "mode": "uni99",
            "group_by": "user",
        },
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": KS,
        "valid_metric": "NDCG@10",
    }
    for item in args.set or []:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    t0 = time.perf_counter()
    config_files = [os.path.join(folder, f"{args.name}.yaml")] + list(args.config_file or [])
    if args.profile:
        regions = {}
        profile_trainer_patch(args.profile, regions)
        try:
            run_recbole_mm(args.model, args.name, config_files, settings)
        except ProfileDone:
            write_profile(args, "ours", regions, settings=settings)
            return
        raise SystemExit("ours: --profile: the trainer's fit was never called")
    result = run_recbole_mm(args.model, args.name, config_files, settings)
    total = time.perf_counter() - t0
    out = ours_record(
        args, settings, result, times, total, model=args.model, config_files=config_files,
        saved_model_file=result.get("saved_model_file"),
    )
    write_json(args.out, out)
    print(
        json.dumps(
            {
                k: out[k]
                for k in (
                    "test",
                    "epochs_run",
                    "train_epoch_wall_s",
                    "valid_pass_wall_s",
                )
            },
            indent=1,
        )
    )


def main(argv=None) -> None:
    parser, sub, argv, passthrough = shim_parser(__doc__, argv)
    c = sub.add_parser(
        "convert", help="a recbole_mm leave-one-out dataset to the reference's files"
    )
    c.add_argument("--dataset-dir", required=True)
    c.add_argument(
        "--name",
        required=True,
        help="dataset name in the output (the reference's --data_name)",
    )
    c.add_argument(
        "--source-name",
        default=None,
        help="the source folder's dataset name (default: folder name)",
    )
    c.add_argument("--out", required=True, help="the reference's --data_dir")
    c.add_argument("--image-suffix", default="feat3CLS")
    c.add_argument("--text-suffix", default="feat1CLS")
    c.add_argument(
        "--seed", type=int, default=2022, help="seed of the 99 fixed negatives"
    )
    c.add_argument(
        "--ours-data-path",
        default=None,
        help="also write recbole_mm's layout (the reverse) here",
    )
    c.add_argument(
        "--max-len",
        type=int,
        default=50,
        help="MAX_ITEM_LIST_LENGTH of the recbole_mm preset",
    )
    rv = sub.add_parser(
        "reverse", help="the reference's files to recbole_mm's long-sequence layout"
    )
    rv.add_argument("--data", required=True, help="the reference's --data_dir")
    rv.add_argument("--name", required=True)
    rv.add_argument("--ours-data-path", required=True)
    rv.add_argument("--max-len", type=int, default=50)
    r = sub.add_parser(
        "reference",
        help="run the reference's run_seminar_model.py (arguments after -- go to it)",
    )
    r.add_argument(
        "--reference",
        required=True,
        help="root of a paper-submission-coder/SEMINAR checkout",
    )
    r.add_argument("--data", required=True)
    r.add_argument("--name", required=True)
    r.add_argument(
        "--model", required=True, choices=["sim", "eta", "qin", "twin", "seminar"]
    )
    r.add_argument("--seed", type=int, default=42)
    add_run_options(r, PROFILE_HELP)
    o = sub.add_parser("ours", help="run recbole_mm's model on the reversed files")
    o.add_argument("--data-path", required=True)
    o.add_argument("--name", required=True)
    o.add_argument("--model", required=True, help="SIM, ETA, QIN, TWIN or SEMINAR")
    o.add_argument(
        "--negatives", default=None, help="<D>_sample.txt: fixed valid/test negatives"
    )
    o.add_argument("--seed", type=int, default=42)
    o.add_argument("--epochs", type=int, default=30)
    o.add_argument(
        "--stopping-step", type=int, default=10, help="the reference's patience (10)"
    )
    o.add_argument("--max-len", type=int, default=50)
    o.add_argument(
        "--topk",
        type=int,
        default=50,
        help="retrieve_topk (the reference's Amazon K = 50)",
    )
    o.add_argument("--reference-compat", action="store_true")
    o.add_argument(
        "--set", action="append", help="extra setting key=value (YAML value)"
    )
    o.add_argument(
        "--config-file", action="append",
        help="a YAML file read after the dataset's preset (e.g. props/SEMINAR/pretrain.yaml); "
        "the settings above and --set override it",
    )
    o.add_argument("--checkpoint-dir", default="saved/reference_bench")
    add_run_options(o, PROFILE_HELP)
    args = parser.parse_args(argv)
    if args.cmd == "convert":
        args.source_name = args.source_name or os.path.basename(
            os.path.normpath(args.dataset_dir)
        )
        convert(args)
    elif args.cmd == "reverse":
        reverse(args.data, args.name, args.ours_data_path, args.max_len)
    elif args.cmd == "reference":
        run_reference(args, passthrough)
    else:
        run_ours(args)


if __name__ == "__main__":
    main()
