"""Fixtures shared by the test modules, and the run's report (what the tests measured, printed at the end)."""
import pytest
import torch

from _support import LoopbackServer


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server serving ``tmp_path / "served"`` (downloads without network)."""
    folder = tmp_path / "served"
    folder.mkdir()
    srv = LoopbackServer(folder)
    yield srv
    srv.stop()


@pytest.fixture
def double_precision():
    """Compute in float64 (loss checks against reference formulas), then restore the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules of tiny models: on a busy 2-core machine OpenMP threads mostly spin."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tok():
    """The packaged all-MiniLM-L6-v2 tokenizer (offline)."""
    from kdtutorial.text import hub

    return hub.load_tokenizer(hub.DEFAULT_TEACHER)


REPORT = pytest.StashKey[list]()


@pytest.fixture
def report(request):
    """``report(line)``: a line for the "kdtutorial report" printed after the run (bad values tried, cells
    compared strictly or within tolerance, slider redraws), so a CI log shows them without -s."""
    lines = request.config.stash.setdefault(REPORT, [])
    return lines.append


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(REPORT, [])
    if lines:
        terminalreporter.section("kdtutorial report")
        for line in lines:
            terminalreporter.write_line(line)
