"""One run of a results table in its own process: ``python -m recbole_mm.results.worker JOB.json RESULT.json``.

``JOB.json`` holds ``spec``, ``locations`` and ``pretrained_path`` (see :func:`recbole_mm.results.runner.execute`);
the result is written atomically to ``RESULT.json``.
"""

import json
import sys

from recbole_mm.data.atomic_files import atomic_write
from recbole_mm.results.runner import execute


def main(argv=None) -> int:
    job_path, result_path = (sys.argv[1:] if argv is None else argv)[:2]
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    result = execute(job["spec"], job["locations"], job["pretrained_path"])
    with atomic_write(result_path) as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
