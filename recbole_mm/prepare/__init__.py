"""From raw public data to ready multi-modal atomic datasets: ``python -m recbole_mm.prepare <subcommand>``.

Subcommands (documented in ``dataset/README.md``): ``amazon``, ``movielens-1m``, ``mmrec``,
``download-images`` and ``encode``. Each prints one summary line per step with what it kept and what
it skipped (and why); nothing is overwritten silently.
"""
