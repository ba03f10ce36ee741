"""Interactive sliders that degrade to a static figure.

``explore(fn, T=(0.5, 20.0, 0.5, 4.0))`` first calls ``fn(T=4.0)`` once, so a static figure exists in every
run (papermill, nbval, a PDF export, a frontend without widgets). Only then, when ipywidgets and a live
kernel are there, it adds ``ipywidgets.interact`` sliders that redraw ``fn``. An exception inside an
``interact`` callback is swallowed by ipywidgets; the direct first call is what makes such a bug fail loudly.
"""
from __future__ import annotations


def _default(spec):
    if isinstance(spec, tuple):
        if len(spec) != 4:
            raise ValueError(f"a slider tuple is (min, max, step, default), got {spec!r}")
        return spec[3]
    if isinstance(spec, list):
        return spec[0]
    return getattr(spec, "value", spec)


def _as_widget(name, spec):
    import ipywidgets as w

    if isinstance(spec, tuple):
        lo, hi, step, value = spec
        cls = w.IntSlider if all(isinstance(v, int) for v in spec) else w.FloatSlider
        return cls(min=lo, max=hi, step=step, value=value, description=name, continuous_update=False)
    if isinstance(spec, list):
        return w.Dropdown(options=spec, value=spec[0], description=name)
    return spec


def widgets_available() -> bool:
    """True inside a Jupyter kernel with ipywidgets importable (a frontend may still not render them)."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def explore(fn, **sliders):
    """Call ``fn`` with each slider's default (the static figure), then add interactive sliders if possible.

    Sliders: ``name=(min, max, step, default)``, ``name=[option, ...]`` (first is the default), or an
    ipywidgets widget. Returns whatever the static call returned.
    """
    result = fn(**{k: _default(v) for k, v in sliders.items()})
    if widgets_available():
        import ipywidgets as w
        from IPython.display import display

        display(w.HTML("<b>Interactive version</b> (needs a live kernel): move the sliders to redraw."))
        w.interact(fn, **{k: _as_widget(k, v) for k, v in sliders.items()})
    return result
