"""What MMSRec's item tower costs per training step on a large catalogue, on the CPU.

MMSRec scores a masked position against the item tower, the fusion network run on every item of the catalogue
as a length-1 sequence, and recomputes it (with gradients) at every training step, as the reference does. This
writes a synthetic pre-split dataset of ``--items`` items (two 512-d modalities, every item a training target),
builds MMSRec at the reference widths (or those given) and measures the process CPU time of, forward + backward,
on one thread:

* ``tower``: the item tower over the whole catalogue (``model.all_items()`` in training mode);
* ``user``: the user-tower part of a Cloze step (``--batch`` histories of ``--length`` items), no tower;
* ``step``: a whole training step (``calculate_loss`` + backward);
* ``eval``: one evaluation batch with the cached tower, and the tower computed once without gradients.

    python bench/mmsrec_item_tower.py                       # 26,000 items, reference widths (512, 2 layers)
    python bench/mmsrec_item_tower.py --items 2000 --reps 1 # smoke run
"""

import argparse
import os
import sys
import tempfile

import numpy as np
import torch
from timing import median_seconds  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recbole_mm.config import Config  # noqa: E402
from recbole_mm.data.atomic_files import write_feature_file, write_inter_files  # noqa: E402
from recbole_mm.data.utils import create_dataset, data_preparation  # noqa: E402
from recbole_mm.registry import get_model  # noqa: E402


def write_catalogue(directory: str, n_items: int, dim: int, length: int) -> None:
    """``syn``: every item a training target once (so it is in the catalogue), random histories."""
    rng = np.random.default_rng(0)
    rows = [(u, rng.integers(0, n_items, size=length).tolist(), u) for u in range(n_items)]
    splits = {"train": rows, "valid": rows[:64], "test": rows[:64]}
    os.makedirs(os.path.join(directory, "syn"))
    write_inter_files(os.path.join(directory, "syn"), "syn", splits)
    for suffix in ("feat1CLS", "feat3CLS"):
        features = rng.standard_normal((n_items, dim)).astype(np.float32)
        write_feature_file(os.path.join(directory, "syn", f"syn.{suffix}"), features, "random")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=26000)
    parser.add_argument("--dim", type=int, default=512, help="feature width of each modality")
    parser.add_argument("--width", type=int, default=512, help="fusion_embed_dim")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=20, help="history length")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # RecBole's Config reads --key=value from the command line: keep these out
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as directory:
        write_catalogue(directory, args.items, args.dim, args.length)
        settings = {
            "data_path": directory,
            "checkpoint_dir": os.path.join(directory, "saved"),
            "benchmark_filename": ["train", "valid", "test"],
            "alias_of_item_id": ["item_id_list"],
            "load_col": {"inter": ["user_id", "item_id_list", "item_id"]},
            "mm_features": {
                "text": {"suffix": "feat1CLS", "dim": args.dim},
                "image": {"suffix": "feat3CLS", "dim": args.dim},
            },
            "MAX_ITEM_LIST_LENGTH": args.length,
            "train_batch_size": args.batch,
            "fusion_embed_dim": args.width,
            "fusion_feedforward_dim": 2 * args.width,
            "fusion_heads": 8 if args.width % 8 == 0 else 2,
            "use_gpu": False,
            "show_progress": False,
        }
        config = Config(model="MMSRec", dataset="syn", config_dict=settings)
        train_data, valid_data, _ = data_preparation(config, create_dataset(config))
        torch.manual_seed(2020)
        model = get_model("MMSRec")(config, train_data.dataset)
        batch = next(iter(train_data))
        seq, lengths, target = batch["item_id_list"], batch["item_length"], batch["item_id"]
        model.train()

        def tower():
            model.zero_grad()
            model.all_items().sum().backward()

        def user():
            model.zero_grad()
            inputs, _, masked = model.cloze(seq, lengths, target)
            model.encode(inputs, model.slot_presence(inputs))[masked].sum().backward()

        def step():
            model.zero_grad()
            model.calculate_loss(batch).backward()

        t_tower, t_user, t_step = (median_seconds(fn, reps=args.reps, warmup=1, clock="cpu") for fn in (tower, user, step))
        model.eval()
        eval_batch = next(iter(valid_data))[0]
        with torch.no_grad():

            def fresh_tower():
                model.forget_item_tower()
                model.all_items()

            t_fresh = median_seconds(fresh_tower, reps=args.reps, warmup=1, clock="cpu")
            model.all_items()
            t_eval = median_seconds(lambda: model.full_sort_predict(eval_batch), reps=args.reps, warmup=1, clock="cpu")
        n = model.n_items - 1
        print(
            f"MMSRec item tower, {n:,} items, width {args.width}, {config['fusion_layers']} layers, batch "
            f"{len(seq)} x {args.length}, {args.threads} thread(s), median of {args.reps}:"
        )
        print(f"  tower over the catalogue, fwd+bwd:  {t_tower:8.3f} s")
        print(f"  user tower of the batch, fwd+bwd:   {t_user:8.3f} s   (tower / user = {t_tower / t_user:.1f}x)")
        print(f"  whole training step:                {t_step:8.3f} s   (tower = {100 * t_tower / t_step:.0f}% of it)")
        print(f"  tower once, no grad (evaluation):   {t_fresh:8.3f} s")
        print(f"  one evaluation batch, cached tower: {t_eval:8.3f} s   ({len(eval_batch)} histories)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
