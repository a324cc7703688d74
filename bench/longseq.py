"""Long-sequence models (SIM, ETA, QIN, TWIN, SEMINAR) on ml-100k_mm at L = 100, on the CPU.

For each model: training rows per second (RecBole's training loader, Adam steps), the uni100 evaluation of the
validation users with each user's 100 candidates scored as one batch (``batch_candidates: True``) against one
candidate at a time (``False``, the reference's loop: the history is re-projected for every candidate), on the
same evaluation batches in the same run, and the whole uni100 validation pass (RecBole's trainer and evaluator,
batched) against one training epoch. A profiled batched pass gives the CPU time of the work on the
``[users, C, G, L]`` scores that no arrangement avoids (top-K selection, softmax, the two batched products): one at a
time divided by it bounds the speed-up.

The histories come from the same chronological MovieLens-100K sequences as ml-100k_mm (same item indices, so its
feature files and dummy queries apply), cut at ``--max-len`` instead of 50: ``ml-100k_mm_l<max-len>`` is written
beside ``ml-100k_mm`` under ``--data-path`` on first use.

    python bench/longseq.py --data-path /tmp/bench_data
    python bench/longseq.py --models TWIN --train-steps 10 --single-batches 1   # quick look

``--throughput`` instead measures training throughput on ``ml-100k_mm_long`` (whole histories, the family's data
layout) at each ``--lengths`` L: histories per second of Adam steps (the family with its default objective over the
positive and 10 sampled negatives, SASRec as ``LongSASRec`` with RecBole's full softmax and with the family's
objective, all at width 64), the loader's seconds per batch, and the peak resident memory of a process that builds
the dataset and runs the steps (one process per model and L). ``--reference-json`` takes the reference code's
figures on the same machine and files (``{"L": {"rows_per_s": .., "eval_pass_s": ..}}``, written by the reference
benchmark) and prints the ratios.

    python bench/longseq.py --throughput --lengths 100 1000 --threads 1

``--pq-loss CHECKPOINT ...`` instead evaluates trained SEMINAR checkpoints (e.g. the ``longseq`` results table's)
on their test split twice, with the exact search and with the product-quantised one (``gsu: pq``, index built from
the checkpoint's weights), and reports the metric loss and the overlap of the retrieved sets.
"""

import argparse
import json
import os

import torch
from timing import once


def ensure_long_dataset(data_path: str, max_len: int) -> str:
    """Write ``ml-100k_mm_l<max_len>`` (pre-split leave-one-out, histories cut at ``max_len``) if missing."""
    from recbole_mm.data.atomic_files import leave_one_out, publish_dir, write_inter_files
    from recbole_mm.prepare import ml100k_mm

    source = ml100k_mm.ensure_built(data_path)
    name = f"ml-100k_mm_l{max_len}"
    target = os.path.join(data_path, name)
    if os.path.isdir(target):
        return name
    import tempfile

    work = tempfile.mkdtemp(prefix=f".{name}.", dir=data_path)
    sequences, _, item_ids = ml100k_mm.chronological_sequences(ml100k_mm.load_source()[0])
    with open(os.path.join(source, "ml-100k_mm.item2index"), encoding="utf-8") as f:
        assert [line.split("\t")[0] for line in f if line.strip()] == item_ids, "item indices differ from ml-100k_mm"
    write_inter_files(work, name, leave_one_out(sequences, max_len))
    for suffix in ("feat1CLS", "feat3CLS", "item"):
        link = os.path.join(work, f"{name}.{suffix}")
        os.symlink(os.path.abspath(os.path.join(source, f"ml-100k_mm.{suffix}")), link)
    publish_dir(work, target)
    return name


def settings(args, name, model, **extra):
    return {
        "data_path": args.data_path,
        "dataset": name,
        "benchmark_filename": ["train", "valid", "test"],
        "alias_of_item_id": ["item_id_list"],
        "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
        "MAX_ITEM_LIST_LENGTH": args.max_len,
        "mm_features": {"text": {"suffix": "feat1CLS", "dim": 384}, "image": {"suffix": "feat3CLS", "dim": 384}},
        "checkpoint_dir": os.path.join(args.data_path, "saved"),
        "use_gpu": False,
        "show_progress": False,
        "seed": 2026,
        # the reference's objective: BCE against one uniform negative per row (256 rows per step)
        "objective": "bce",
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
        "train_batch_size": 256,
        **extra,
    }


def build(args, name, model, **extra):
    from recbole.utils import init_seed

    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation
    from recbole_mm.registry import get_model

    config = Config(model=model, config_dict=settings(args, name, model, **extra))
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    return config, train, valid, get_model(model)(config, train.dataset)


def adam_step(trainer, net, batch):
    """One training step: the model's loss (the sum of its parts), backward, Adam."""
    trainer.optimizer.zero_grad()
    losses = net.calculate_loss(batch)
    (sum(losses) if isinstance(losses, tuple) else losses).backward()
    trainer.optimizer.step()


ESSENTIAL_OPS = ("aten::topk", "aten::_softmax", "aten::bmm")


def essential_seconds(net, batch):
    """CPU seconds of the batched path's top-K selection, softmax and the two batched products (the work either path
    must do on the ``[users, C, G, L]`` scores) in one profiled pass, and every op's self time."""
    from torch.profiler import ProfilerActivity, profile

    net.batch_candidates = True
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net.predict(batch)
    seconds = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    return sum(seconds.get(op, 0.0) for op in ESSENTIAL_OPS), seconds


def measure(args, name, model):
    from recbole_mm.registry import get_trainer

    config, train, valid, net = build(args, name, model)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
    # training: Adam steps on RecBole's batches (the first two warm up)
    batches = iter(train)
    net.train()
    rows, seconds = 0, 0.0
    for step in range(args.train_steps + 2):
        batch = next(batches)

        elapsed, _ = once(lambda: adam_step(trainer, net, batch))  # noqa: B023 (called at once)
        if step >= 2:
            rows, seconds = rows + len(batch), seconds + elapsed
    train_rate = rows / seconds
    epoch_s = len(train.dataset) / train_rate
    # evaluation: the same batches, all candidates at once vs one at a time
    net.eval()
    eval_batches = []
    for k, batch in enumerate(valid):
        if k == args.single_batches:
            break
        eval_batches.append(batch[0])
    with torch.no_grad():
        net.batch_candidates = True
        net.predict(eval_batches[0])  # warm-up
        batched_s, batched = once(lambda: [net.predict(b) for b in eval_batches])
        net.batch_candidates = False
        single_s, single = once(lambda: [net.predict(b) for b in eval_batches])
        net.batch_candidates = True
    diff = max(float((a - b).abs().max()) for a, b in zip(batched, single))
    floor_s, shares = essential_seconds(net, eval_batches[0])
    users = sum(len(b) for b in eval_batches) // 100
    # the whole uni100 validation pass through RecBole's trainer and evaluator (batched)
    pass_s, result = once(lambda: trainer.evaluate(valid, load_best_model=False))
    return {
        "model": model,
        "train_rows_per_s": train_rate,
        "train_rows": len(train.dataset),
        "epoch_s": epoch_s,
        "users_timed": users,
        "batched_s": batched_s,
        "single_s": single_s,
        "speedup": single_s / batched_s,
        "essential_s": floor_s * len(eval_batches),
        "bound": single_s / (floor_s * len(eval_batches)),
        "op_seconds": shares,
        "max_abs_diff": diff,
        "eval_pass_s": pass_s,
        "eval_users": len(valid.uid_list),
        "ndcg@10_untrained": float(result["ndcg@10"]),
    }


THROUGHPUT_MODELS = ("SASRec full softmax", "SASRec family objective", "SIM", "ETA", "QIN", "TWIN", "SEMINAR")


def throughput_settings(model: str, length: int, data_path: str, histories: int = 256) -> tuple:
    """``(model class name, config)`` of a throughput row at history length ``length``, ``histories`` per step."""
    from recbole_mm.results.tables import LONGSEQ_NEGATIVES, LONGSEQ_OBJECTIVE

    negatives = LONGSEQ_NEGATIVES["sample_num"]
    sampled = {"train_neg_sample_args": LONGSEQ_NEGATIVES, "train_batch_size": histories * negatives}
    config = {
        "data_path": data_path,
        "checkpoint_dir": os.path.join(data_path, "saved"),
        "MAX_ITEM_LIST_LENGTH": length,
        "hidden_size": 64,
        "use_gpu": False,
        "show_progress": False,
        "seed": 2026,
    }
    if model == "SASRec full softmax":
        return "LongSASRec", dict(config, objective="full_softmax", loss_type="CE", train_neg_sample_args=None,
                                  train_batch_size=histories, inner_size=64)
    if model == "SASRec family objective":
        return "LongSASRec", {**config, **sampled, "objective": LONGSEQ_OBJECTIVE, "loss_type": "BPR", "inner_size": 64}
    k = min(50, length // 2)
    return model, {**config, **sampled, "retrieve_topk": k, "qin_stage1_topk": max(k, min(80, length * 4 // 5))}


def throughput_one(model: str, length: int, data_path: str, steps: int, histories: int = 256) -> dict:
    """Histories per second of ``steps`` Adam steps (after 2 warm-up steps), loader seconds per batch, and this
    process's peak resident memory."""
    import resource

    from recbole.utils import init_seed

    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation
    from recbole_mm.registry import get_model, get_trainer

    name, settings = throughput_settings(model, length, data_path, histories)
    config = Config(model=name, dataset="ml-100k_mm_long", config_dict=settings)
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    net = get_model(name)(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], name)(config, net)
    net.train()
    batches = iter(train)
    histories, step_s, load_s = 0, 0.0, 0.0
    negatives = settings["train_neg_sample_args"]["sample_num"] if settings.get("train_neg_sample_args") else 1
    for step in range(steps + 2):
        load, batch = once(lambda: next(batches))

        elapsed, _ = once(lambda: adam_step(trainer, net, batch))  # noqa: B023 (called at once)
        if step >= 2:
            histories, step_s, load_s = histories + len(batch) // negatives, step_s + elapsed, load_s + load
    return {
        "model": model,
        "L": length,
        "histories_per_s": histories / step_s,
        "load_s_per_batch": load_s / steps,
        "histories_per_batch": histories // steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def throughput(args):
    """One subprocess per (model, L), so each peak memory is its own; the table of results."""
    import subprocess
    import sys

    from recbole_mm.prepare import ml100k_mm_long

    ml100k_mm_long.ensure_built(args.data_path)
    rows = []
    for length in args.lengths:
        for model in args.throughput_models:
            command = [sys.executable, __file__, "--throughput-one", model, str(length), "--data-path", args.data_path,
                       "--train-steps", str(args.train_steps), "--threads", str(args.threads),
                       "--histories", str(args.histories)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:  # e.g. killed for memory (exit -9): a row that says so
                rows.append({"model": model, "L": length, "failed": f"exit {done.returncode}",
                             "histories_per_batch": args.histories})
            else:
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    reference = {}
    if args.reference_json:
        with open(args.reference_json, encoding="utf-8") as f:
            reference = json.load(f)
    print(f"\nml-100k_mm_long, D = 64, {args.histories} histories per step, 10 negatives per history for the sampled "
          f"objectives, {args.threads} thread(s)")
    print("| L | model | histories/s (training) | loader s / batch | peak RSS MiB | vs SASRec full softmax |"
          + (" vs reference |" if reference else ""))
    print("|---|---|---|---|---|---|" + ("---|" if reference else ""))
    for r in rows:
        if "failed" in r:
            print(f"| {r['L']} | {r['model']} | {r['failed']} | | | |" + (" |" if reference else ""))
            continue
        base = next(b for b in rows if b["L"] == r["L"] and b["model"] == "SASRec full softmax")
        ratio = f"{r['histories_per_s'] / base['histories_per_s']:.2f}x" if "failed" not in base else ""
        line = (f"| {r['L']} | {r['model']} | {r['histories_per_s']:,.0f} | {r['load_s_per_batch']:.3f} | "
                f"{r['peak_rss_mib']:,.0f} | {ratio} |")
        ref = reference.get(str(r["L"]), {}).get("rows_per_s")
        if reference:
            line += f" {r['histories_per_s'] / ref:.1f}x |" if ref else " |"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


def pq_loss(paths):
    """Test metrics of SEMINAR checkpoints with the exact and the product-quantised search, and the share of each
    exact per-head top-K set the quantised search retrieves."""
    from recbole.utils import init_seed

    from recbole_mm.quick_start import load_data_and_model
    from recbole_mm.registry import get_trainer

    rows = []
    for path in paths:
        config, model, _, _, _, test = load_data_and_model(path)
        config.compatibility_settings()  # numpy aliases RecBole's metrics read (an unpickled config sets none)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
        model.gsu_mode = "exact"
        init_seed(config["seed"], True)  # the same 99 negatives per user in both evaluations
        exact_s, exact = once(lambda: trainer.evaluate(test, load_best_model=False))
        model.gsu_mode, model.pq_index = "pq", None
        build_s, _ = once(model.build_pq_index)
        init_seed(config["seed"], True)
        pq_s, pq = once(lambda: trainer.evaluate(test, load_best_model=False))
        batch = next(iter(test))[0]
        with torch.no_grad():
            first, group, position = model.candidate_groups(batch)
            items = torch.zeros(len(first), int(position.max()) + 1, dtype=torch.long)
            items[group, position] = batch["item_id"]
            history = model.encode_history(batch["item_id_list"][first], batch["query_list"][first])
            tokens = model.candidate_queries(batch["query"][first], items)
            target = model.target_embed(history, items, tokens)
            exact_sets = model.top_k(model.attention_logits(history.pairs, target), history.valid)
            pq_sets = model.top_k(model.pq_scores(history, target), history.valid)
            real = history.valid[:, None, None, :]
            overlap = float(((exact_sets & pq_sets & real).sum()) / (exact_sets & real).sum())
        rows.append({"checkpoint": path, "exact": exact, "pq": pq, "overlap": overlap, "exact_s": exact_s,
                     "pq_s": pq_s, "build_s": build_s, "seed": config["seed"]})
    metrics = ["hit@1", "hit@10", "ndcg@10", "hit@50", "ndcg@50", "mrr@50"]
    print("| seed | search | " + " | ".join(m.upper() for m in metrics) + " | top-K overlap | eval s |")
    print("|---|---|" + "---|" * (len(metrics) + 2))
    for r in rows:
        for name in ("exact", "pq"):
            values = " | ".join(f"{float(r[name][m]):.4f}" for m in metrics)
            overlap = "1" if name == "exact" else f"{r['overlap']:.3f}"
            seconds = r["exact_s"] if name == "exact" else r["pq_s"]
            print(f"| {r['seed']} | {name} | {values} | {overlap} | {seconds:.1f} |")
    for m in metrics:
        loss = [float(r["exact"][m]) - float(r["pq"][m]) for r in rows]
        print(f"{m}: exact - pq = {sum(loss) / len(loss):+.4f} (mean of {len(loss)})")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-path", default="/tmp/recbole_mm_bench_data")
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["SIM", "ETA", "QIN", "TWIN", "SEMINAR"])
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps (256 rows each)")
    parser.add_argument("--single-batches", type=int, default=1, help="evaluation batches (256 users) timed both ways")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--pq-loss", nargs="+", default=None, metavar="CHECKPOINT", help="SEMINAR checkpoints")
    parser.add_argument("--throughput", action="store_true", help="training throughput and memory at --lengths")
    parser.add_argument("--lengths", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--throughput-models", nargs="+", default=list(THROUGHPUT_MODELS))
    parser.add_argument("--throughput-one", nargs=2, metavar=("MODEL", "L"), help=argparse.SUPPRESS)
    parser.add_argument("--histories", type=int, default=256, help="histories per training step (--throughput)")
    parser.add_argument("--reference-json", default=None, help="the reference code's figures, for the ratios")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.throughput_one:
        print(json.dumps(throughput_one(args.throughput_one[0], int(args.throughput_one[1]), args.data_path,
                                        args.train_steps, args.histories)))
        return
    if args.throughput:
        throughput(args)
        return
    if args.pq_loss:
        rows = pq_loss(args.pq_loss)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2, default=float)
        return
    name = ensure_long_dataset(args.data_path, args.max_len)
    rows = [measure(args, name, model) for model in args.models]
    print(f"\nml-100k_mm, L = {args.max_len}, D = 64, H = 4, K = 50 (QIN K1 = 80), {args.threads} threads")
    print(
        "| model | training rows/s | epoch (est.) | uni100 eval, batched | one at a time | speed-up | "
        "top-K + softmax + products | speed-up bound | eval pass |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['train_rows_per_s']:,.0f} | {r['epoch_s']:.0f} s ({r['train_rows']:,} rows) | "
            f"{r['batched_s']:.2f} s | {r['single_s']:.1f} s | {r['speedup']:.0f}x | {r['essential_s']:.2f} s | "
            f"{r['bound']:.0f}x | {r['eval_pass_s']:.1f} s ({r['eval_users']} users, "
            f"{r['eval_pass_s'] / r['epoch_s']:.2f} epoch) |"
        )
    print(
        "(speed-up bound: one at a time / the batched pass's top-K selection, softmax and two batched products "
        "alone, profiled; the ratio if every other batched cost were zero)"
    )
    print(f"(batched vs one at a time timed on the same {rows[0]['users_timed']} users; largest score difference "
          f"{max(r['max_abs_diff'] for r in rows):.1e})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
