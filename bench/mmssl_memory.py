"""MMSSL at MMRec dataset scale on the CPU: peak memory and time per epoch, against the reference's dense arithmetic.

Builds a synthetic dataset of Amazon Baby's or Sports' size in the MMRec layout (``<name>.inter`` with ``x_label``,
``image_feat.npy`` 4096-d, ``text_feat.npy`` 384-d; every user has at least two training interactions, the rest
uniform at random), converts it with ``python -m recbole_mm.prepare mmrec`` and trains MMSSL through RecBole's
dataset, dataloader and :class:`recbole_mm.trainer.MMSSLTrainer` (default settings, ``train_batch_size`` 1024).

Measured: the peak resident memory while training (``VmHWM``, reset after the model and data are built), the time of
``--batches`` training batches and of the once-per-epoch graph regeneration. The epoch time is extrapolated from
them (``mean batch time x batches per epoch + regeneration``) and printed as such. The reference keeps the interaction
matrix and its transpose as dense float32 ``U x I`` tensors on the device (``2 x U x I x 4`` bytes), printed beside;
``--dense-peer`` allocates them too and runs the same batches again on top of them (the measured peak with them).

``--after-regeneration`` installs the generated graphs first, so the timed batches are those of every epoch after
the first (the first epoch's batches propagate over the training graph only).

``--epochs N`` instead trains whole epochs through ``MMSSLTrainer.fit`` (every batch, the graph regeneration, the
full-ranking validation after each epoch) and tests the best epoch once: measured epoch, validation and test times
and the peak resident memory of the whole run, no extrapolation. The interactions are random, so the metrics it
prints are near chance; the run shows the cost, not the accuracy.

    python bench/mmssl_memory.py --size baby --batches 2 --dense-peer
    python bench/mmssl_memory.py --size sports --batches 1
    python bench/mmssl_memory.py --size baby --epochs 1
"""

import argparse
import os
import tempfile
import time

import numpy as np
import torch
from timing import logged

SIZES = {  # users, items, interactions (the MMSSL README's counts)
    "baby": (19445, 7050, 139110),
    "sports": (35598, 18357, 256308),
}


def write_mmrec_source(folder: str, name: str, users: int, items: int, interactions: int, seed: int = 0) -> None:
    """Synthetic MMRec-layout source: 80/10/10 split per interaction (x_label), each user >= 2 train rows."""
    rng = np.random.default_rng(seed)
    u = np.concatenate([np.repeat(np.arange(users), 2), rng.integers(0, users, 3 * interactions)])
    i = rng.integers(0, items, len(u))
    i[: 2 * users : 2] = np.arange(users) % items  # every item appears
    key = np.unique(u.astype(np.int64) * items + i, return_index=True)[1]
    keep = np.sort(key)[:interactions]
    u, i = u[keep], i[keep]
    label = rng.choice([0, 1, 2], size=len(u), p=[0.8, 0.1, 0.1])
    label[: 2 * users] = 0
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("userID\titemID\trating\ttimestamp\tx_label\n")
        f.writelines(f"{a}\t{b}\t5\t0\t{c}\n" for a, b, c in zip(u, i, label))
    np.save(os.path.join(folder, "image_feat.npy"), rng.random((items, 4096), dtype=np.float32))
    np.save(os.path.join(folder, "text_feat.npy"), rng.standard_normal((items, 384), dtype=np.float32))


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def whole_epochs(args, model, trainer, train, valid, test) -> None:
    """Train ``args.epochs`` whole epochs with validation after each, test the best epoch; print measured figures."""
    log = []
    trainer._train_epoch = logged(log, "train", trainer._train_epoch)
    trainer._valid_epoch = logged(log, "valid", trainer._valid_epoch)
    before = rss("VmRSS")
    reset_peak()
    start, cpu = time.perf_counter(), time.process_time()
    best_score, best_valid = trainer.fit(train, valid, saved=True, show_progress=False)
    fit, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    tested, tested_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = rss("VmHWM")
    dense = 2 * (model.n_users - 1) * (model.n_items - 1) * 4
    print(
        f"{args.size}: {model.n_users - 1:,} users x {model.n_items - 1:,} items, {len(train.dataset):,} training "
        f"interactions, {len(train)} batches of {train.batch_size} per epoch, {torch.get_num_threads()} threads"
    )
    for epoch, ((_, wall_t, cpu_t), (_, wall_v, cpu_v)) in enumerate(zip(log[0::2], log[1::2])):
        print(
            f"  epoch {epoch}: training {wall_t:.1f} s wall, {cpu_t:.1f} s CPU (every batch + the graph "
            f"regeneration); validation {wall_v:.1f} s wall, {cpu_v:.1f} s CPU"
        )
    print(
        f"  fit: {fit:.1f} s wall, {fit_cpu:.1f} s CPU; test of the best epoch: {tested:.1f} s wall, "
        f"{tested_cpu:.1f} s CPU"
    )
    print(f"  best valid: {dict(best_valid)}")
    print(f"  test:       {dict(result)}")
    print(f"  peak RSS of the run: {peak / 2**30:.2f} GiB (RSS before training {before / 2**30:.2f} GiB)")
    print(f"  reference's dense U x I: {dense / 2**30:.2f} GiB (R and R^T as float32: 2 x U x I x 4 bytes)")
    print(f"  load average: {os.getloadavg()[0]:.1f} (other processes on the machine)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="baby")
    parser.add_argument("--batches", type=int, default=3, help="training batches timed (the epoch is extrapolated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply users, items and interactions")
    parser.add_argument(
        "--after-regeneration",
        action="store_true",
        help="regenerate the graphs before timing: the batches of every epoch after the first",
    )
    parser.add_argument(
        "--epochs", type=int, default=0, help="train this many whole epochs with validation, then test (measured)"
    )
    parser.add_argument(
        "--dense-peer", action="store_true", help="also run the batches again holding the dense U x I tensors"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation
    from recbole_mm.prepare.cli import main as prepare
    from recbole_mm.registry import get_model
    from recbole_mm.trainer import MMSSLTrainer

    users, items, interactions = (max(int(n * args.scale), 8) for n in SIZES[args.size])
    with tempfile.TemporaryDirectory() as work:
        source = os.path.join(work, "source")
        os.makedirs(source)
        write_mmrec_source(source, args.size, users, items, interactions)
        assert (
            prepare(["mmrec", "--source", source, "--name", args.size, "--data-path", os.path.join(work, "data")]) == 0
        )
        config = Config(
            model="MMSSL",
            dataset=args.size,
            config_dict={
                "data_path": os.path.join(work, "data"),
                "checkpoint_dir": os.path.join(work, "saved"),
                "show_progress": False,
                "state": "ERROR",
                "dataset_preset": args.size,
                "epochs": max(args.epochs, 1),
                "eval_step": 1,
            },
        )
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        model = get_model("MMSSL")(config, train.dataset)
        trainer = MMSSLTrainer(config, model)
        if args.epochs:
            whole_epochs(args, model, trainer, train, valid, test)
            return
        batches = []
        for batch in train:
            batches.append(batch)
            if len(batches) == args.batches:
                break
        n_train = len(train.dataset)
        n_batches = len(train)
        params = sum(p.numel() for p in model.parameters())
        critic = sum(p.numel() for p in model.critic.parameters())
        if args.after_regeneration:  # later epochs propagate over the generated graphs installed by the first
            model.regenerate_graphs()
            edges = {m: len(p[0]) for m, p in model.generated.items() if p is not None}
            print(f"  generated graphs installed before timing: {edges} user-item pairs")
        before = rss("VmRSS")
        marks = []  # (wall, process CPU) times at the end of every batch (MMSSL.after_batch runs last in each step)
        after_batch = model.after_batch

        def marked(step):
            after_batch(step)
            marks.append((time.perf_counter(), time.process_time()))

        model.after_batch = marked
        reset_peak()
        start, cpu = time.perf_counter(), time.process_time()
        trainer._train_epoch(batches, 0)  # the batches, then the graph regeneration for every user
        timed_marks = np.array([(start, cpu)] + marks[: len(batches)])
        batch_wall, batch_cpu = np.diff(timed_marks[:, 0]), np.diff(timed_marks[:, 1])
        epoch_cpu = time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        model.regenerate_graphs()
        regen, regen_cpu = time.perf_counter() - start, time.process_time() - cpu
        peak = rss("VmHWM")
        # the reference's allocation: the training matrix and its transpose as dense float32 U x I tensors, held
        # for the whole run; the same batches again on top of them
        peak_dense = None
        if args.dense_peer:
            matrix = train.dataset.inter_matrix(form="csr").astype(np.float32)
            dense_r = torch.from_numpy(np.asarray(matrix.todense()))
            dense_rt = torch.from_numpy(np.ascontiguousarray(np.asarray(matrix.T.todense())))
            reset_peak()
            trainer._train_epoch(batches, 0)
            peak_dense = rss("VmHWM")
            del dense_r, dense_rt
        per_batch, per_batch_cpu = batch_wall.mean(), batch_cpu.mean()
        dense = 2 * (model.n_users - 1) * (model.n_items - 1) * 4
        users_per_batch = np.mean([len(torch.unique(b[model.USER_ID])) for b in batches])
        print(
            f"{args.size}: {model.n_users - 1:,} users x {model.n_items - 1:,} items, {n_train:,} training "
            f"interactions, {n_batches} batches of {train.batch_size} per epoch ({users_per_batch:.0f} distinct users per "
            f"batch), "
            f"{params / 1e6:.1f} M parameters ({critic / 1e6:.1f} M in the critic), {torch.get_num_threads()} threads"
        )
        print(f"  peak RSS while training:  {peak / 2**30:.2f} GiB (RSS before training {before / 2**30:.2f} GiB)")
        print(f"  reference's dense U x I:  {dense / 2**30:.2f} GiB (R and R^T as float32: 2 x U x I x 4 bytes)")
        if peak_dense is not None:
            print(
                f"  peak with them held:      {peak_dense / 2**30:.2f} GiB (same batches; "
                f"{peak_dense / peak:.2f}x ours)"
            )
        print(
            f"  time per batch:           {per_batch:.1f} s wall, {per_batch_cpu:.1f} s CPU (mean of {len(batches)}; "
            f"CPU {batch_cpu.min():.1f} to {batch_cpu.max():.1f} s)"
        )
        print(
            f"  graph regeneration:       {regen:.1f} s wall, {regen_cpu:.1f} s CPU (every user, once per epoch; "
            f"{epoch_cpu - batch_cpu.sum():.1f} s CPU at the end of the timed batches)"
        )
        print(
            f"  epoch (extrapolated):     {per_batch * n_batches + regen:.0f} s wall = {n_batches} x {per_batch:.1f} s "
            f"+ {regen:.1f} s ({per_batch_cpu * n_batches + regen_cpu:.0f} s CPU)"
        )
        print(f"  load average:             {os.getloadavg()[0]:.1f} (other processes on the machine)")


if __name__ == "__main__":
    main()
