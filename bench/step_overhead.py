"""Benchmark: the host cost of one MISSRec training step, by part, at sizes where the arithmetic is negligible.

MISSRec's fine-tuning step on an H100 is bound by host and launch overhead (``bench/README.md``,
MISSRec B), so the time of a step at tiny sizes (hidden 8, batch 4, the real ml-100k_mm items and sequences of
up to 50 items) is what a step costs whatever the GPU. Printed per part: the whole step (forward, backward,
Adam), the loss forward, forward + backward, Adam, and inside the forward the interest encoder, the sequence
decoder and the all-item logits; then the whole step with the loss compiled (``compile_mode``, its compilation
untimed), eager and compiled side by side. One thread on a CPU.

Usage: python bench/step_overhead.py --device cpu
       python bench/step_overhead.py --device cuda --compile-mode reduce-overhead
"""

import argparse
import itertools

import torch
from ml100k_steps import ml100k_mm_model, train_step
from timing import mean_ms, once

from recbole_mm.runtime import compile_training_loss

TINY = {"hidden_size": 8, "inner_size": 8, "n_heads": 2, "train_batch_size": 4, "interest_ratio": 0.01}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--compile-mode", default="default", help="compile_mode of the compiled row")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled row (eager parts only)")
    parser.add_argument("--data-path", default="dataset/", help="parent folder of ml-100k_mm (built on first use)")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    model, train_data, device = ml100k_mm_model("MISSRec", args.device, args.data_path, **TINY)
    model.discover_interests(0)
    batch = next(itertools.islice(train_data, 1)).to(device)
    seq, seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        train_step(model, optimizer, batch)

    ids = model.interest_ids(seq, model.interest_width)
    memory = model.trm_model.encoder(model.interest_embeddings[ids], src_key_padding_mask=ids == 0)
    tokens = torch.randn(*seq.shape, model.hidden_size, device=device)
    output = model(seq, seq_len)[0]
    parts = {
        "whole step (forward, backward, Adam)": step,
        "loss forward": lambda: model.calculate_loss(batch),
        "loss forward + backward": lambda: model.calculate_loss(batch).backward(),
        "Adam step": optimizer.step,
        "  forward: interest encoder": lambda: model.trm_model.encoder(
            model.interest_embeddings[ids], src_key_padding_mask=ids == 0
        ),
        "  forward: sequence decoder": lambda: model.trm_model.decoder(
            tokens, memory, tgt_key_padding_mask=seq == 0, memory_key_padding_mask=ids == 0
        ),
        "  forward: all-item logits": lambda: model.item_logits(output.detach()),
    }
    model.train()
    rows = {label: mean_ms(fn, device, args.reps, warmup=3) for label, fn in parts.items()}
    eager = rows["whole step (forward, backward, Adam)"]
    if not args.no_compile:
        compile_training_loss(model, args.compile_mode)
        compiling, _ = once(step, device)  # compiles
        rows[f"whole step, loss compiled ({args.compile_mode})"] = mean_ms(step, device, args.reps, warmup=3)

    print(f"\nMISSRec step host cost, {args.device}, ml-100k_mm, {TINY}, mean of {args.reps}")
    print("| part | ms |\n|---|---|")
    for label, value in rows.items():
        print(f"| {label} | {value:.2f} |")
    if not args.no_compile:
        compiled = rows[f"whole step, loss compiled ({args.compile_mode})"]
        print(f"eager / compiled: {eager / compiled:.2f}x (compilation: {compiling:.1f} s, untimed above)")


if __name__ == "__main__":
    main()
