import io
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from recbole_mm.prepare.download import download_images

PIL = pytest.importorskip("PIL.Image")


def jpeg_bytes(seed):
    buffer = io.BytesIO()
    PIL.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def server():
    """A loopback HTTP server: /ok, /flaky (500 once, then fine), /trunc (short body), /missing (404), /garbage."""
    hits = Counter()
    good = jpeg_bytes(0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits[self.path] += 1
            kind = self.path.split("/")[1]
            if kind == "missing" or (kind == "flaky" and hits[self.path] == 1):
                self.send_error(404 if kind == "missing" else 500)
                return
            if kind == "chunked":  # a chunk cut short: http.client raises IncompleteRead
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n" % len(good) + good[:100])
                return
            body = {"garbage": b"<html>not an image</html>"}.get(kind, good)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if kind == "trunc" else body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits, good
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_parallel_retried_resumable_and_never_partial(server, tmp_path):
    base, hits, good = server
    out = tmp_path / "img"
    out.mkdir()
    keep = jpeg_bytes(1)
    (out / "I6.jpg").write_bytes(keep)  # already there: never fetched again
    urls = {
        "I1": f"{base}/ok/I1.jpg",
        "I2": f"{base}/flaky/I2.jpg",
        "I3": f"{base}/trunc/I3.jpg",
        "I4": f"{base}/missing/I4.jpg",
        "I5": f"{base}/garbage/I5.png",
        "I7": f"{base}/chunked/I7.jpg",
        "I6": f"{base}/trunc/I6.jpg",
    }
    report, failed = download_images(urls, str(out), workers=4, retries=2, timeout=5, backoff=0.01)
    assert (out / "I1.jpg").read_bytes() == good and (out / "I2.jpg").read_bytes() == good
    assert hits["/flaky/I2.jpg"] == 2  # retried after the 500
    assert hits["/trunc/I3.jpg"] == 3 and hits["/missing/I4.jpg"] == 1  # 404 is not retried
    assert hits["/trunc/I6.jpg"] == 0 and (out / "I6.jpg").read_bytes() == keep
    assert set(failed) == {"I3", "I4", "I5", "I7"}
    assert "IncompleteRead" in failed["I7"] and hits["/chunked/I7.jpg"] == 3
    assert (
        failed["I4"] == "HTTP 404" and failed["I3"].startswith("truncated") and "not a decodable image" in failed["I5"]
    )
    assert sorted(os.listdir(out)) == ["I1.jpg", "I2.jpg", "I6.jpg", "failed.tsv"]  # no partial or temporary file
    assert "7 items with an image URL: 2 fetched, 1 already present" in report.line()
    assert "skipped 4 failed downloads" in report.line()
    assert (out / "failed.tsv").read_text().splitlines()[1].startswith("I3\ttruncated")
    hits.clear()
    report, failed = download_images(urls, str(out), workers=2, retries=0, timeout=5, backoff=0.01)
    assert set(hits) == {
        "/trunc/I3.jpg",
        "/missing/I4.jpg",
        "/garbage/I5.png",
        "/chunked/I7.jpg",
    }  # only what is missing
    assert "3 already present" in report.line()


def test_cli_reads_urls_from_metadata_for_the_dataset_items(server, tmp_path, capsys):
    import json

    from recbole_mm.prepare.cli import main

    base, hits, good = server
    meta = tmp_path / "meta.json"
    meta.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"asin": "A", "imageURLHighRes": [f"{base}/ok/A.jpg"], "imageURL": [f"{base}/missing/small.jpg"]},
                {"asin": "B", "title": "no image"},
                {"asin": "C", "image": [f"{base}/ok/C.jpg"]},
            ]
        )
        + "\n"
    )
    items = tmp_path / "X.item2index"
    items.write_text("A\t0\nB\t1\n")  # C is not in the dataset
    assert (
        main(
            [
                "download-images",
                "--meta",
                str(meta),
                "--items",
                str(items),
                "--out",
                str(tmp_path / "img"),
                "--retries",
                "0",
            ]
        )
        == 0
    )
    assert sorted(os.listdir(tmp_path / "img")) == ["A.jpg", "failed.tsv"] and set(hits) == {"/ok/A.jpg"}
    assert "skipped 1 items without an image URL (B)" in capsys.readouterr().out
