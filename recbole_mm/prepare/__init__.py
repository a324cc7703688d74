"""From raw public data to ready multi-modal atomic datasets: ``python -m recbole_mm.prepare <subcommand>``.

Subcommands (documented in ``dataset/README.md``): ``amazon``, ``movielens-1m``, ``mmrec``,
``download-images`` and ``encode``. Each prints one summary line per step with what it kept and what
it skipped (and why); nothing is overwritten silently.
"""

from recbole_mm.data.utils import register_builder


def _build_ml100k_mm(root: str) -> None:
    from recbole_mm.prepare import ml100k_mm

    ml100k_mm.ensure_built(root)


def _build_ml100k_mm_domains(root: str) -> None:
    from recbole_mm.prepare import ml100k_mm_domains

    ml100k_mm_domains.ensure_built(root)


def _build_ml100k_mm_cold(root: str) -> None:
    from recbole_mm.prepare import ml100k_mm_cold

    ml100k_mm_cold.ensure_built(root)


def _build_ml100k_mm_long(root: str) -> None:
    from recbole_mm.prepare import ml100k_mm_long

    ml100k_mm_long.ensure_built(root)


# The embedded datasets: built from the MovieLens-100K files in the recbole wheel the first time a run asks for them.
register_builder("ml-100k_mm", _build_ml100k_mm)
register_builder("ml-100k_mm_A", _build_ml100k_mm_domains)
register_builder("ml-100k_mm_B", _build_ml100k_mm_domains)
register_builder("ml-100k_mm_cold", _build_ml100k_mm_cold)
register_builder("ml-100k_mm_long", _build_ml100k_mm_long)
