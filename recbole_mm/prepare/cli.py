"""Argument parsing and the subcommands of ``python -m recbole_mm.prepare``.

Examples::

    python -m recbole_mm.prepare amazon --domain Scientific ratings_Industrial_and_Scientific.csv \\
        meta_Industrial_and_Scientific.json.gz --images images/Scientific --encoder clip:ViT-B-32.pt
    python -m recbole_mm.prepare amazon --name FHCKM_mm_full --domain Food F.csv meta_F.json.gz \\
        --domain Home H.csv meta_H.json.gz ...
    python -m recbole_mm.prepare movielens-1m --source ml-1m/
    python -m recbole_mm.prepare mmrec --source data/baby --name baby
    python -m recbole_mm.prepare download-images --meta meta_X.json.gz \\
        --items dataset/X_mm_full/X_mm_full.item2index --out images/X
    python -m recbole_mm.prepare encode --dir dataset/X_mm_full --name X_mm_full \\
        --encoder hf-clip:clip-vit-base-patch32 --images images/X
    python -m recbole_mm.prepare amazon2018 Movies_and_TV_5.json.gz meta_Movies_and_TV.json.gz --name Movies_and_TV
    python -m recbole_mm.prepare kuaisar --source KuaiSAR_final/
"""

import argparse
import os
import sys
from typing import List, Optional

from recbole_mm import compat
from recbole_mm.errors import RecBoleMMError


def _device(name: Optional[str]) -> str:
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_encode_options(parser: argparse.ArgumentParser, default_encoder: Optional[str] = "minilm") -> None:
    group = parser.add_argument_group("encoding")
    group.add_argument(
        "--encoder", default=default_encoder, help="minilm[:DIR] (text only, default), clip:FILE.pt or hf-clip:DIR"
    )
    group.add_argument(
        "--arch",
        default=None,
        help="required CLIP architecture, e.g. ViT-B/32 (a checkpoint of another one is an error)",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda when available, fp16 there)")
    group.add_argument("--batch-size", type=int, default=256, help="texts or images per forward pass")
    group.add_argument("--workers", type=int, default=None, help="image decoding processes (default: CPU count)")
    group.add_argument("--chunk-rows", type=int, default=8192, help="items per resumable chunk")
    group.add_argument("--word-drop", type=float, default=0.15, help="word drop probability of feat2CLS")
    group.add_argument("--seed", type=int, default=2020, help="seed of the word drop")
    group.add_argument(
        "--jpeg-draft", action="store_true", help="faster JPEG decoding at reduced scale (pixels differ slightly)"
    )
    group.add_argument(
        "--overwrite", action="store_true", help="replace feature files made from other inputs or encoders"
    )


def add_build_options(parser: argparse.ArgumentParser, default_name: Optional[str], name_help: str) -> None:
    """Options of the subcommands that build a sequential dataset from raw files."""
    parser.add_argument("--k", type=int, default=5, help="k-core threshold for users and items (default 5)")
    parser.add_argument("--name", default=default_name, help=f"dataset name (default {name_help})")
    parser.add_argument("--data-path", default="dataset", help="parent folder of the dataset folder")
    parser.add_argument("--no-encode", action="store_true", help="write the atomic files only")
    add_encode_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_mm.prepare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    amazon = sub.add_parser("amazon", help="Amazon Review Data (2018) categories to a pre-split dataset")
    amazon.add_argument(
        "--domain",
        nargs=3,
        action="append",
        required=True,
        metavar=("NAME", "INTERACTIONS", "METADATA"),
        help="category name, ratings CSV or review JSON(.gz), metadata JSON(.gz); "
        "repeat for a multi-domain pre-training set",
    )
    amazon.add_argument(
        "--images",
        action="append",
        default=None,
        metavar="DIR",
        help="image folder(s) with <asin>.<ext> files (one for all domains, or one per domain in order)",
    )
    amazon.add_argument(
        "--subset", action="store_true", help="keep only items with text and an image (the _mm_subset variant)"
    )
    add_build_options(amazon, None, "<NAME>_mm_full / _mm_subset; several domains: their initials")

    ml = sub.add_parser("movielens-1m", help="MovieLens-1M ratings.dat / movies.dat to a pre-split dataset")
    ml.add_argument("--source", required=True, help="folder with ratings.dat and movies.dat")
    ml.add_argument("--posters", default=None, help="optional poster folder with <MovieID>.<ext> files")
    add_build_options(ml, "ml-1m_mm", "ml-1m_mm")

    mmrec = sub.add_parser("mmrec", help="MMSSL/LATTICE json or MMRec .inter + .npy features to atomic files")
    mmrec.add_argument(
        "--source", required=True, help="folder with train/val/test.json or <name>.inter, image_feat.npy, text_feat.npy"
    )
    mmrec.add_argument("--name", required=True, help="dataset name")
    mmrec.add_argument("--data-path", default="dataset", help="parent folder of the dataset folder")

    dl = sub.add_parser("download-images", help="fetch item images from metadata URLs")
    dl.add_argument("--meta", action="append", required=True, help="metadata JSON(.gz) file(s)")
    dl.add_argument("--out", required=True, help="image folder")
    dl.add_argument("--items", default=None, help="an .item2index file: fetch only these items")
    dl.add_argument("--workers", type=int, default=16, help="parallel downloads")
    dl.add_argument("--retries", type=int, default=3, help="retries per image for transient errors")
    dl.add_argument("--timeout", type=float, default=30.0, help="seconds per request")

    a18 = sub.add_parser(
        "amazon2018", help="Amazon 2018 category to the long-sequence layout with dummy queries (SEMINAR's recipe)"
    )
    a18.add_argument("reviews", help="5-core reviews <Category>_5.json(.gz) (or a ratings CSV)")
    a18.add_argument("metadata", help="meta_<Category>.json(.gz)")
    a18.add_argument("--name", required=True, help="dataset name, e.g. Movies_and_TV")
    a18.add_argument("--k", type=int, default=5, help="k-core threshold for users and items (default 5)")
    a18.add_argument("--data-path", default="dataset", help="parent folder of the dataset folder")

    kuai = sub.add_parser("kuaisar", help="KuaiSAR search + recommendation clicks to the long-sequence layout")
    kuai.add_argument("--source", required=True, help="folder with src_inter.csv and rec_inter.csv (KuaiSAR_final)")
    kuai.add_argument("--name", default="kuaisar", help="dataset name (default kuaisar)")
    kuai.add_argument("--data-path", default="dataset", help="parent folder of the dataset folder")

    enc = sub.add_parser("encode", help="item texts and images of a prepared dataset to feature files")
    enc.add_argument("--dir", required=True, help="dataset folder")
    enc.add_argument(
        "--name", default=None, help="file prefix (default: the folder name; a domain name in a pre-training folder)"
    )
    enc.add_argument("--no-text", action="store_true", help="skip feat1CLS")
    enc.add_argument("--text-aug", action="store_true", help="also write feat2CLS (word-dropped text)")
    enc.add_argument("--images", default=None, help="image folder with <item id>.<ext> files -> feat3CLS")
    add_encode_options(enc)
    return parser


def default_name(domains: List[List[str]], subset: bool) -> str:
    stem = domains[0][0] if len(domains) == 1 else "".join(d[0][0] for d in domains)
    return f"{stem}_mm_{'subset' if subset else 'full'}"


def run_encode(
    args, directory: str, names: List[str], image_dirs: List[Optional[str]], text_aug: bool, text: bool = True
) -> None:
    from recbole_mm.prepare.common import PrepareError
    from recbole_mm.prepare.encode import check_encode_inputs, encode_dataset, make_encoder

    if not text and not text_aug and not any(image_dirs):
        raise PrepareError("encode: nothing to do (--no-text without --text-aug or --images)")
    for name, image_dir in zip(names, image_dirs):  # before the encoder's weights are loaded
        check_encode_inputs(directory, name, text or text_aug, image_dir)

    encoder = make_encoder(args.encoder, _device(args.device), args.batch_size, args.arch)
    if any(image_dirs) and not hasattr(encoder, "encode_pixels"):
        raise PrepareError(
            f"--images: encoder {encoder.name} encodes text only; images need --encoder clip:FILE or hf-clip:DIR"
        )
    for name, image_dir in zip(names, image_dirs):
        encode_dataset(
            directory,
            name,
            encoder,
            text=text,
            text_aug=text_aug,
            image_dir=image_dir,
            word_drop_ratio=args.word_drop,
            seed=args.seed,
            chunk_rows=args.chunk_rows,
            workers=args.workers,
            draft=args.jpeg_draft,
            overwrite=args.overwrite,
        )


def cmd_amazon(args) -> None:
    from recbole_mm.prepare.amazon import prepare_domain
    from recbole_mm.prepare.common import PrepareError, write_config, write_dataset

    images = args.images or []
    if len(images) not in (0, 1, len(args.domain)):
        raise PrepareError(f"--images: give one folder or one per domain ({len(args.domain)}), found {len(images)}")
    image_dirs = images * len(args.domain) if len(images) == 1 else (images or [None] * len(args.domain))
    names = [d[0] for d in args.domain]
    if len(set(names)) != len(names):
        raise PrepareError(f"--domain: names must differ, found {names}")
    domains = []
    for (name, inter, meta), image_dir in zip(args.domain, image_dirs):
        domain, report = prepare_domain(name, inter, meta, args.k, args.subset, image_dir)
        print(report.line())
        domains.append(domain)
    name = args.name or default_name(args.domain, args.subset)
    target, reused = write_dataset(args.data_path, name, domains)
    print(f"amazon: {'kept the identical dataset in' if reused else 'wrote'} {target}")
    if not args.no_encode:
        file_names = [name] if len(domains) == 1 else names
        run_encode(args, target, file_names, image_dirs if any(image_dirs) else [None] * len(file_names), text_aug=True)
    print(f"amazon: config preset {write_config(target, name)}")


def cmd_movielens(args) -> None:
    from recbole_mm.prepare.common import write_config, write_dataset
    from recbole_mm.prepare.movielens import prepare_movielens

    domain, report = prepare_movielens(args.source, args.name, args.k)
    print(report.line())
    target, reused = write_dataset(args.data_path, args.name, [domain])
    print(f"movielens-1m: {'kept the identical dataset in' if reused else 'wrote'} {target}")
    if not args.no_encode:
        run_encode(args, target, [args.name], [args.posters], text_aug=True)
    print(f"movielens-1m: config preset {write_config(target, args.name)}")


def cmd_mmrec(args) -> None:
    from recbole_mm.prepare.common import write_config
    from recbole_mm.prepare.mmrec import convert_mmrec

    target, report = convert_mmrec(args.source, args.data_path, args.name)
    print(report.line())
    print(f"mmrec: wrote {target}; config preset {write_config(target, args.name, sequential=False)}")


def cmd_download(args) -> None:
    from recbole_mm.prepare.amazon import image_urls
    from recbole_mm.prepare.common import SkipReport, read_index_file
    from recbole_mm.prepare.download import download_images

    meta_report = SkipReport("download-images metadata")
    urls = image_urls(args.meta, meta_report)
    if args.items:
        wanted = read_index_file(args.items)
        missing = [i for i in wanted if i not in urls]
        meta_report.skip("items without an image URL", missing[0] if missing else None, len(missing))
        urls = {i: urls[i] for i in wanted if i in urls}
    print(meta_report.line())
    report, _ = download_images(urls, args.out, args.workers, args.retries, args.timeout)
    print(report.line())


def cmd_encode(args) -> None:
    from recbole_mm.prepare.common import write_config

    name = args.name or os.path.basename(os.path.normpath(args.dir))
    run_encode(args, args.dir, [name], [args.images], text_aug=args.text_aug, text=not args.no_text)
    if os.path.isfile(os.path.join(args.dir, f"{name}.train.inter")):  # not for a domain of a pre-training set
        print(f"encode: config preset {write_config(args.dir, name)}")


def _write_long_sequence(args, dataset: dict, report, command: str) -> None:
    from recbole_mm.prepare.long_sequence import write_long_sequence_dataset, write_preset

    print(report.line())
    max_len = dataset.pop("max_len")
    target, reused = write_long_sequence_dataset(args.data_path, args.name, **dataset, max_len=max_len)
    print(f"{command}: {'kept the identical dataset in' if reused else 'wrote'} {target}")
    print(f"{command}: config preset {write_preset(target, args.name, max_len)}")


def cmd_amazon2018(args) -> None:
    from recbole_mm.prepare.amazon2018 import prepare_amazon2018

    dataset, report = prepare_amazon2018(args.reviews, args.metadata, args.name, args.k)
    _write_long_sequence(args, dataset, report, "amazon2018")


def cmd_kuaisar(args) -> None:
    from recbole_mm.prepare.kuaisar import prepare_kuaisar

    src, rec = (os.path.join(args.source, f) for f in ("src_inter.csv", "rec_inter.csv"))
    dataset, report = prepare_kuaisar(src, rec, args.name)
    _write_long_sequence(args, dataset, report, "kuaisar")


COMMANDS = {
    "amazon": cmd_amazon,
    "amazon2018": cmd_amazon2018,
    "kuaisar": cmd_kuaisar,
    "movielens-1m": cmd_movielens,
    "mmrec": cmd_mmrec,
    "download-images": cmd_download,
    "encode": cmd_encode,
}


def main(argv: Optional[List[str]] = None) -> int:
    compat.apply()
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except RecBoleMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
