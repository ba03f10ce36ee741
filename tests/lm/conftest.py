"""Lesson 08's tests run on one intra-op thread (tiny models on a busy 2-core machine), and share a tiny Llama."""
import pytest
import torch

from _lm_support import tiny_llama


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread_for_lm_tests():
    """Every test module under tests/lm runs with ``torch.set_num_threads(1)``; the old value comes back after
    the module, so the other folders' tests keep their thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def teacher():
    """A tiny Llama teacher (4 layers, seed 0) shared by a module's tests: no test may train it."""
    return tiny_llama(0)
