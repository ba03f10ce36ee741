"""Lesson 08's tests run on one intra-op thread (tiny models on a busy 2-core machine), and share a tiny Llama."""
import pytest

from _lm_support import tiny_llama


@pytest.fixture(scope="module", autouse=True)
def _lm_tests_on_one_thread(one_torch_thread):
    """Every test module under tests/lm runs on one intra-op thread (tests/conftest.py's one_torch_thread)."""
    yield


@pytest.fixture(scope="module")
def teacher():
    """A tiny Llama teacher (4 layers, seed 0) shared by a module's tests: no test may train it."""
    return tiny_llama(0)
