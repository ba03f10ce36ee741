"""Sliders bind what they draw and draw once; figures never go over the tracked figures/ unless asked to."""
import pytest

from kdtutorial.course import plotting, widgets


def test_explore_passes_bound_values_and_returns_the_static_call():
    seen = []

    def draw(T=1.0, *, logits):
        seen.append((T, logits))
        return "figure"

    data = [1, 2]
    assert widgets.explore(draw, T=(0.5, 2.0, 0.5, 1.5), bind=dict(logits=data)) == "figure"
    assert seen == [(1.5, data)]  # outside a kernel: the static call only


def test_explore_refuses_a_name_that_is_both_slider_and_bound():
    with pytest.raises(ValueError, match="T: given both"):
        widgets.explore(lambda T: None, T=(0, 1, 1, 0), bind=dict(T=3))


def test_slider_values_are_the_ends_and_the_middle():
    class Slider:
        min, max, step = 0.5, 20.0, 0.5

    lo, mid, hi = widgets._slider_values(Slider())
    assert (lo, hi) == (0.5, 20.0) and lo < mid < hi and ((mid - lo) / 0.5).is_integer()

    class IntSlider:
        min, max, step = 1, 10, 1

    assert widgets._slider_values(IntSlider()) == [1, 5, 10]


def test_a_dead_weak_proxy_among_live_objects_is_not_a_panel():
    import weakref

    class Panel:
        pass

    obj = Panel()
    proxy = weakref.proxy(obj)
    assert widgets._is_panel(proxy, Panel)
    del obj  # gc.get_objects() can still hand out the proxy; isinstance on it raises ReferenceError
    with pytest.raises(ReferenceError):
        isinstance(proxy, Panel)
    assert not widgets._is_panel(proxy, Panel)


def test_figures_go_to_runs_in_a_checkout_and_to_the_env_folder_when_set(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.delenv(plotting.FIGURES_ENV, raising=False)
    (tmp_path / "kdtutorial").mkdir()
    (tmp_path / "notebooks").mkdir()
    assert plotting.figures_dir(tmp_path / "notebooks") == tmp_path / "runs" / "figures"
    elsewhere = tmp_path_factory.mktemp("colab")
    assert plotting.figures_dir(elsewhere) == elsewhere / "figures"
    monkeypatch.setenv(plotting.FIGURES_ENV, str(tmp_path / "figures"))
    assert plotting.figures_dir(elsewhere) == tmp_path / "figures"
