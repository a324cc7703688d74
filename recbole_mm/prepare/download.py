"""``download-images``: fetch item images in parallel into ``<out>/<item id>.<ext>``.

- Resumable: an item that already has an image file in ``out`` is not fetched again (a file there only
  ever appears complete, see below), so a re-run fetches what is missing.
- Never a partial file: each download goes to a hidden temporary file in ``out``; it is renamed to
  its final name only when the byte count matches ``Content-Length`` and, with Pillow installed, the
  image decodes completely. Otherwise it is deleted.
- Retried: connection errors, timeouts, truncated or undecodable bodies and HTTP 429 / 5xx are retried
  up to ``retries`` times with exponential back-off; other HTTP errors (404, 403) are not.
- Reported: one summary line (fetched, already present, failed by reason); the failed items and the
  last error of each are written to ``<out>/failed.tsv`` (replaced on every run).
"""

import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Dict, Optional, Tuple

from tqdm import tqdm

from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.prepare.common import SkipReport
from recbole_mm.prepare.encode import IMAGE_EXTENSIONS

USER_AGENT = "recbole_mm-download-images"


class TransientError(Exception):
    """A failure worth retrying."""


def extension(url: str) -> str:
    """The image extension of a URL (``.jpg`` when it has none of the known ones)."""
    ext = os.path.splitext(url.split("?", 1)[0])[1].lower()
    return ext if ext in IMAGE_EXTENSIONS else ".jpg"


def _check_image(path: str) -> None:
    try:
        from PIL import Image
    except ImportError:  # without Pillow the byte count is the only check
        return
    try:
        with Image.open(path) as image:
            image.load()
    except Exception as err:
        raise TransientError(f"not a decodable image ({type(err).__name__}: {err})") from None


def fetch(url: str, target: str, timeout: float) -> None:
    """Download ``url`` to ``target`` through a temporary file; raise on any failure."""
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part", dir=directory)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
                fd = None
                expected = response.headers.get("Content-Length")
                size = 0
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    size += len(block)
        except urllib.error.HTTPError as err:
            if err.code == 429 or err.code >= 500:
                raise TransientError(f"HTTP {err.code}") from None
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # IncompleteRead, reset, timeout
            raise TransientError(f"{type(err).__name__}: {err}") from None
        if expected is not None and size != int(expected):
            raise TransientError(f"truncated: {size} of {expected} bytes")
        if size == 0:
            raise TransientError("empty body")
        _check_image(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        tmp = None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def fetch_with_retries(url: str, target: str, retries: int, timeout: float, backoff: float) -> Optional[str]:
    """``None`` on success, else the reason of the last failure."""
    for attempt in range(retries + 1):
        try:
            fetch(url, target, timeout)
            return None
        except TransientError as err:
            reason = str(err)
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except ValueError as err:  # malformed URL
            return f"bad URL: {err}"
        if attempt < retries:
            time.sleep(backoff * (2**attempt))
    return reason


def existing_images(out: str) -> Dict[str, str]:
    """``item id -> file`` of the complete images already in ``out``."""
    found = {}
    for file in sorted(os.listdir(out)):
        stem, ext = os.path.splitext(file)
        if not file.startswith(".") and ext.lower() in IMAGE_EXTENSIONS:
            found.setdefault(stem, file)
    return found


def download_images(
    urls: Dict[str, str], out: str, workers: int = 16, retries: int = 3, timeout: float = 30.0, backoff: float = 1.0
) -> Tuple[SkipReport, Dict[str, str]]:
    """Fetch ``{item id: url}`` into ``out``.

    Returns:
        ``(report, failed)`` with ``failed = {item id: reason}``.
    """
    os.makedirs(out, exist_ok=True)
    present = existing_images(out)
    todo = {item: url for item, url in urls.items() if item not in present}
    bad_ids = [item for item in todo if not item or "/" in item or item.startswith(".")]
    report = SkipReport(f"download-images {out}")
    failed = {item: "item id is not a valid file name" for item in bad_ids}
    for item in bad_ids:
        del todo[item]
    fetched = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(
                fetch_with_retries, url, os.path.join(out, item + extension(url)), retries, timeout, backoff
            ): item
            for item, url in todo.items()
        }
        for future in tqdm(as_completed(futures), total=len(futures), desc="download images", unit="img"):
            reason = future.result()
            if reason is None:
                fetched += 1
            else:
                failed[futures[future]] = reason
    for item, reason in failed.items():
        report.skip("failed downloads", f"{item}: {reason}")
    report.note(
        f"{len(urls):,} items with an image URL: {fetched:,} fetched, "
        f"{len(urls) - len(todo) - len(bad_ids):,} already present"
    )
    with atomic_write(os.path.join(out, "failed.tsv")) as f:
        f.write("item_id\treason\n")
        f.writelines(f"{item}\t{reason}\n" for item, reason in sorted(failed.items()))
    return report, failed
