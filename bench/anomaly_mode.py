"""Benchmark: training steps with torch's autograd anomaly detection on (what importing RecBole's SINE module
leaves switched on for the whole process) and off (recbole_mm's ``detect_anomaly: False``), side by side.

RecBole 1.2.1's ``recbole/model/sequential_recommender/sine.py`` calls ``torch.autograd.set_detect_anomaly(True)``
at import, and looking up any RecBole sequential model imports it. Anomaly mode records a Python stack trace per
forward op and checks every backward node's output for NaN (a device sync per node on a GPU).

For each model: the real ml-100k_mm training batches (``results/ml-100k_mm.yaml`` protocol: batch 512, CE over
all items), Adam steps timed in alternating blocks of ``--steps`` with the mode off and on (after warm-up
steps), the same batches in both. Prints ms per step and the on/off ratio.

Usage: python bench/anomaly_mode.py --device cpu --steps 5
       python bench/anomaly_mode.py --device cuda --steps 50
"""

import argparse
import itertools

import torch
from ml100k_steps import ml100k_mm_model, train_step
from timing import mean_ms


def ms_per_step(model, optimizer, batches, device, anomaly: bool) -> float:
    torch.autograd.set_detect_anomaly(anomaly)
    try:
        return mean_ms(lambda: [train_step(model, optimizer, batch) for batch in batches], device) / len(batches)
    finally:
        torch.autograd.set_detect_anomaly(False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "MISSRec"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=2, help="off/on block pairs per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data-path", default="dataset/", help="parent folder of ml-100k_mm (built on first use)")
    args = parser.parse_args()

    rows = []
    for name in args.models:
        model, train_data, device = ml100k_mm_model(name, args.device, args.data_path)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = [b.to(device) for b in itertools.islice(train_data, args.steps)]
        for batch in batches[: args.warmup]:
            train_step(model, optimizer, batch)
        times = {False: [], True: []}
        for _ in range(args.rounds):
            for anomaly in (False, True):
                times[anomaly].append(ms_per_step(model, optimizer, batches, device, anomaly))
                print(f"{name}: anomaly {'on ' if anomaly else 'off'} {times[anomaly][-1]:9.1f} ms/step", flush=True)
        off, on = min(times[False]), min(times[True])
        rows.append((name, off, on))

    print(f"\ndevice {args.device}, {args.steps} steps per block, best of {args.rounds} blocks")
    print("| model | anomaly off (recbole_mm) | anomaly on (after importing RecBole's SINE) | on / off |")
    print("|---|---|---|---|")
    for name, off, on in rows:
        print(f"| {name} | {off:.1f} ms/step | {on:.1f} ms/step | {on / off:.2f}x |")


if __name__ == "__main__":
    main()
