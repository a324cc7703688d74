"""Fixtures of the clustering tests: where Triton kernels run (CPU through Triton's interpreter, or CUDA)."""

import importlib.util

import pytest
import torch

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA variant runs (one Triton mode per process)")


@pytest.fixture
def interpreter(monkeypatch):
    """``TRITON_INTERPRET=1`` for the test; skips if this process already imported Triton to compile kernels."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tl.zeros, InterpretedFunction):
        pytest.skip("triton was imported for compilation earlier in this process: run this file on its own")


@pytest.fixture(
    params=[
        pytest.param("cpu", marks=[needs_triton, no_cuda]),
        pytest.param("cuda", marks=[pytest.mark.gpu, needs_triton, needs_cuda]),
    ]
)
def device(request):
    """CPU through Triton's interpreter, or CUDA."""
    if request.param == "cpu":
        request.getfixturevalue("interpreter")
    return torch.device(request.param)
