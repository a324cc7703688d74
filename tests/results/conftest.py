"""Fixtures of the results-runner tests: the real ml-100k_mm (and its two domains) built once per session."""

import pytest


@pytest.fixture(scope="session")
def domains_root(ml100k_root):
    """``ml100k_root`` with ``ml-100k_mm_A`` and ``ml-100k_mm_B`` built beside ``ml-100k_mm``."""
    from recbole_mm.prepare import ml100k_mm_domains

    ml100k_mm_domains.ensure_built(str(ml100k_root))
    return ml100k_root
