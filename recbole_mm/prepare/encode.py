"""``encode``: item texts and images to feature files, batched, resumable, written atomically.

For a prepared dataset ``<dir>/<name>.{item2index,text}`` (and an image folder holding
``<raw item id>.<ext>`` files) this writes, row ``i`` = item index ``i``:

- ``<name>.feat1CLS``: text embedding of the item text;
- ``<name>.feat2CLS``: text embedding of the word-dropped text (each word dropped with probability
  ``word_drop``, seeded), UniSRec's pre-training augmentation;
- ``<name>.feat3CLS``: image embedding; a zero row where the item has no image or its image cannot be
  decoded (counted in the summary line).

Work is split into chunks of ``chunk_rows`` items. Finished chunks are kept in ``<file>.parts/`` (each
written atomically), so an interrupted run continues where it stopped; the final file and its sidecar
JSON (encoder, dim, item count, sha256, input fingerprint) are written atomically at the end and the
parts are removed. An existing feature file made from other inputs or another encoder is an error
unless ``overwrite`` is set; one made from the same inputs is kept as it is.
"""

import hashlib
import json
import os
import shutil
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from recbole_mm.data.atomic_files import atomic_write, write_feature_file
from recbole_mm.prepare.common import PrepareError, SkipReport, read_index_file, read_text_file

TEXT_SUFFIX, TEXT_AUG_SUFFIX, IMAGE_SUFFIX = "feat1CLS", "feat2CLS", "feat3CLS"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


def make_encoder(spec: str, device: str = "cpu", batch_size: int = 256, arch: Optional[str] = None):
    """An encoder from a command-line spec: ``minilm[:DIR]``, ``clip:FILE`` or ``hf-clip:DIR``."""
    kind, _, where = spec.partition(":")
    if kind == "minilm":
        from recbole_mm.encoders.text import MiniLMEncoder

        return MiniLMEncoder(where or None, device=device, batch_size=batch_size)
    if kind == "clip" and where:
        from recbole_mm.encoders.clip import OpenAIClipEncoder

        return OpenAIClipEncoder(where, device=device, batch_size=batch_size, arch=arch)
    if kind == "hf-clip" and where:
        from recbole_mm.encoders.clip import HFClipEncoder

        return HFClipEncoder(where, device=device, batch_size=batch_size, arch=arch)
    raise PrepareError(f"--encoder: expected 'minilm', 'minilm:DIR', 'clip:FILE.pt' or 'hf-clip:DIR', found {spec!r}")


def text_function(encoder) -> Callable[[List[str]], np.ndarray]:
    """The encoder's text path (MiniLM's ``encode`` or CLIP's ``encode_text``)."""
    return getattr(encoder, "encode_text", None) or encoder.encode


def word_drop(texts: Sequence[Optional[str]], ratio: float, seed: int) -> List[Optional[str]]:
    """Drop each whitespace-separated word with probability ``ratio`` (same seed, same result)."""
    rng = np.random.default_rng(seed)
    dropped = []
    for text in texts:
        if text is None:
            dropped.append(None)
            continue
        words = text.split(" ")
        keep = rng.random(len(words)) >= ratio
        dropped.append(" ".join(w for w, k in zip(words, keep) if k))
    return dropped


def fingerprint(encoder_name: str, inputs: Sequence[Optional[str]], chunk_rows: int) -> str:
    """sha256 over the encoder name, the chunk size and every input (text or image path with size/mtime)."""
    digest = hashlib.sha256(f"{encoder_name}\n{chunk_rows}\n".encode())
    for item in inputs:
        digest.update(b"\x00" if item is None else item.encode("utf-8", "surrogatepass") + b"\x01")
    return digest.hexdigest()


def _check_existing(path: str, print_fn, print_prefix: str, fp: str, overwrite: bool) -> bool:
    """True when ``path`` already holds these features; error when it holds others and ``overwrite`` is off."""
    if not os.path.exists(path):
        return False
    sidecar = {}
    if os.path.isfile(path + ".json"):
        with open(path + ".json", encoding="utf-8") as f:
            sidecar = json.load(f)
    if sidecar.get("input_fingerprint") == fp:
        print_fn(f"{print_prefix}: {path} is up to date (same encoder and inputs), kept")
        return True
    if not overwrite:
        raise PrepareError(
            f"{path} already exists and was made from other inputs or another encoder "
            f"(sidecar encoder: {sidecar.get('encoder', 'none')!r}, items: {sidecar.get('items', '?')}); "
            f"pass --overwrite to replace it"
        )
    return False


def encode_file(
    path: str,
    inputs: Sequence[Optional[str]],
    encode_chunk: Callable[[List[str], SkipReport], np.ndarray],
    dim: int,
    encoder_name: str,
    report: SkipReport,
    chunk_rows: int = 8192,
    overwrite: bool = False,
    extra: Optional[Dict] = None,
    desc: str = "encode",
    print_fn=print,
) -> bool:
    """Encode ``inputs`` (``None`` = missing -> zero row) chunk by chunk into the feature file ``path``.

    Args:
        encode_chunk: maps the non-``None`` inputs of one chunk to ``[k, dim]`` float32; may record
            skipped inputs in the report and return zero rows for them.
        report: per-run skip counts; counts of chunks finished in an earlier run are restored from
            the parts directory.

    Returns:
        True when the file was written, False when an identical one was already there.
    """
    fp = fingerprint(encoder_name, inputs, chunk_rows)
    if _check_existing(path, print_fn, report.what, fp, overwrite):
        return False
    parts = path + ".parts"
    manifest = os.path.join(parts, "manifest.json")
    os.makedirs(parts, exist_ok=True)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            if json.load(f).get("input_fingerprint") != fp:
                raise PrepareError(
                    f"{parts} holds the chunks of an interrupted run with other inputs or another encoder; "
                    f"remove that directory to start over"
                )
    else:
        with atomic_write(manifest) as f:
            json.dump({"input_fingerprint": fp, "encoder": encoder_name, "items": len(inputs)}, f)
    n_chunks = (len(inputs) + chunk_rows - 1) // chunk_rows
    chunks = []
    with tqdm(total=len(inputs), desc=desc, unit="item") as bar:
        for c in range(n_chunks):
            lo, hi = c * chunk_rows, min(len(inputs), (c + 1) * chunk_rows)
            chunk_path = os.path.join(parts, f"chunk{c:06d}.npy")
            stats_path = chunk_path + ".json"
            if os.path.isfile(chunk_path) and os.path.isfile(stats_path):
                with open(stats_path, encoding="utf-8") as f:
                    report.merge(json.load(f))
                chunks.append(np.load(chunk_path))
                bar.update(hi - lo)
                continue
            chunk_report = SkipReport(report.what, report.examples)
            rows = np.zeros((hi - lo, dim), dtype=np.float32)
            keep = [k for k in range(lo, hi) if inputs[k] is not None]
            if keep:
                rows[np.asarray(keep) - lo] = encode_chunk([inputs[k] for k in keep], chunk_report)
            with atomic_write(chunk_path, "wb") as f:
                np.save(f, rows)
            with atomic_write(stats_path) as f:
                json.dump(chunk_report.as_dict(), f)
            report.merge(chunk_report.as_dict())
            chunks.append(rows)
            bar.update(hi - lo)
    features = np.concatenate(chunks, axis=0) if chunks else np.zeros((0, dim), np.float32)
    write_feature_file(path, features, encoder_name, {"input_fingerprint": fp, **(extra or {})})
    shutil.rmtree(parts)
    return True


def image_paths(image_dir: str, item_ids: Sequence[str], report: SkipReport) -> List[Optional[str]]:
    """``<image_dir>/<raw id>.<ext>`` per item (``None`` where there is none).

    Files whose name matches no item, and second files for the same item, are counted in the report.
    """
    if not os.path.isdir(image_dir):
        raise PrepareError(f"image directory {image_dir} does not exist")
    index = {raw: k for k, raw in enumerate(item_ids)}
    paths: List[Optional[str]] = [None] * len(item_ids)
    for file in sorted(os.listdir(image_dir)):
        stem, ext = os.path.splitext(file)
        if file.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
            continue
        k = index.get(stem)
        if k is None:
            report.skip("image files matching no item", file)
        elif paths[k] is not None:
            report.skip("extra image files for an item (the first by name is used)", file)
        else:
            paths[k] = os.path.join(image_dir, file)
    return paths


def image_chunk_function(encoder, workers: Optional[int], draft: bool, batch_size: int):
    """``encode_chunk`` for images: parallel decode, batched encode, zero rows for undecodable files.

    Returns ``(encode_chunk, decoder)``; the worker pool starts on the first chunk to encode (none when
    every chunk is already done); the caller closes it with ``decoder.close()``.
    """
    from recbole_mm.encoders.images import ImageDecoder

    decoder = ImageDecoder(encoder.image_size, workers, draft)

    def encode_chunk(paths: List[str], report: SkipReport) -> np.ndarray:
        decoder.start()
        out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
        batch, where = [], []
        for k, (pixels, reason) in enumerate(decoder.imap(paths)):
            if pixels is None:
                report.skip("unreadable or truncated images (zero row)", f"{os.path.basename(paths[k])}: {reason[:60]}")
                continue
            batch.append(pixels)
            where.append(k)
            if len(batch) == batch_size or k == len(paths) - 1:
                out[where] = encoder.encode_pixels(np.stack(batch))
                batch, where = [], []
        if batch:
            out[where] = encoder.encode_pixels(np.stack(batch))
        return out

    return encode_chunk, decoder


def check_encode_inputs(
    directory: str, name: str, text: bool, image_dir: Optional[str]
) -> Tuple[List[str], Dict[str, str]]:
    """Check what ``encode_dataset`` reads before any encoder is loaded: ``<name>.item2index``, the ``<name>.text``
    line of every item (when texts are encoded) and the image folder.

    Returns:
        ``(item_ids, texts by raw id)`` (``{}`` without texts).

    Raises:
        PrepareError: naming the missing file or folder, or the items without a text line.
    """
    item_ids = read_index_file(os.path.join(directory, f"{name}.item2index"))
    by_id = {}
    if text:
        text_path = os.path.join(directory, f"{name}.text")
        if not os.path.isfile(text_path):
            raise PrepareError(f"{text_path} does not exist; it holds the item texts to encode")
        by_id = read_text_file(text_path)
        absent = [raw for raw in item_ids if raw not in by_id]
        if absent:
            raise PrepareError(
                f"{text_path} has no line for items {absent[:5]} of {name}.item2index ({len(absent)} in all)"
            )
    if image_dir is not None and not os.path.isdir(image_dir):
        raise PrepareError(f"image directory {image_dir} does not exist")
    return item_ids, by_id


def encode_dataset(
    directory: str,
    name: str,
    encoder,
    text: bool = True,
    text_aug: bool = False,
    image_dir: Optional[str] = None,
    word_drop_ratio: float = 0.15,
    seed: int = 2020,
    chunk_rows: int = 8192,
    workers: Optional[int] = None,
    draft: bool = False,
    overwrite: bool = False,
    print_fn=print,
) -> Dict[str, str]:
    """Write the feature files of dataset ``<directory>/<name>.*``; print one summary line per file.

    Returns:
        ``{suffix: path}`` of the feature files of this dataset after the run.
    """
    item_ids, by_id = check_encode_inputs(directory, name, text or text_aug, image_dir)
    written = {}
    if text or text_aug:
        texts = [by_id[raw] or None for raw in item_ids]
        encode_text = text_function(encoder)
        jobs = ([(TEXT_SUFFIX, texts, "item text")] if text else []) + (
            [
                (
                    TEXT_AUG_SUFFIX,
                    word_drop(texts, word_drop_ratio, seed),
                    f"item text, words dropped with p={word_drop_ratio} (seed {seed})",
                )
            ]
            if text_aug
            else []
        )
        for suffix, inputs, content in jobs:
            report = SkipReport(f"encode {name}.{suffix}")
            path = os.path.join(directory, f"{name}.{suffix}")
            encode_file(
                path,
                inputs,
                lambda batch, _r: encode_text(batch),
                encoder.dim,
                encoder.name,
                report,
                chunk_rows,
                overwrite,
                {"content": content},
                f"{name}.{suffix}",
                print_fn,
            )
            missing = sum(t is None for t in inputs)
            report.note(
                f"{len(inputs):,} items, {len(inputs) - missing:,} encoded, {missing:,} without text (zero row)"
            )
            print_fn(report.line())
            written[suffix] = path
    if image_dir is not None:
        if not hasattr(encoder, "encode_pixels"):
            raise PrepareError(
                f"encoder {encoder.name} encodes text only; images need --encoder clip:FILE or hf-clip:DIR"
            )
        report = SkipReport(f"encode {name}.{IMAGE_SUFFIX}")
        paths = image_paths(image_dir, item_ids, report)
        path = os.path.join(directory, f"{name}.{IMAGE_SUFFIX}")
        fp_inputs = [None if p is None else f"{p}\t{os.path.getsize(p)}\t{os.path.getmtime(p)}" for p in paths]
        chunk_fn, decoder = image_chunk_function(encoder, workers, draft, encoder.batch_size)
        try:
            by_key = dict(zip(fp_inputs, paths))
            encode_file(
                path,
                fp_inputs,
                lambda batch, r: chunk_fn([by_key[b] for b in batch], r),
                encoder.dim,
                encoder.name,
                report,
                chunk_rows,
                overwrite,
                {"content": f"item image from {os.path.abspath(image_dir)}"},
                f"{name}.{IMAGE_SUFFIX}",
                print_fn,
            )
        finally:
            decoder.close()
        missing = sum(p is None for p in paths)
        report.note(
            f"{len(paths):,} items, {len(paths) - missing:,} with an image file, {missing:,} without (zero row)"
        )
        print_fn(report.line())
        written[IMAGE_SUFFIX] = path
    return written
