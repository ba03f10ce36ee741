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


def explore(fn, *, bind=None, **sliders):
    """Call ``fn`` with each slider's default (the static figure), then add interactive sliders if possible.

    Sliders: ``name=(min, max, step, default)``, ``name=[option, ...]`` (first is the default), or an
    ipywidgets widget. ``bind``: values ``fn`` draws from (data, logits, ...), passed on every redraw. Binding
    them here, when the widget is made, means that a later notebook cell which rebinds a global of the same
    name cannot change or break what the slider draws. ``fn`` shows its figure itself (``plt.show()``); what it
    returns is kept for the static call (e.g. to save the figure) and dropped on a redraw, so each redraw
    shows exactly one figure. Returns what the static call returned.
    """
    bound = dict(bind or {})
    clash = sorted(set(bound) & set(sliders))
    if clash:
        raise ValueError(f"{', '.join(clash)}: given both as a slider and in bind=")
    result = fn(**bound, **{k: _default(v) for k, v in sliders.items()})
    if widgets_available():
        import ipywidgets as w
        from IPython.display import display

        def redraw(**values):
            fn(**bound, **values)  # the figure is shown inside fn; returning it would show it twice

        redraw.__name__ = getattr(fn, "__name__", "redraw")
        display(w.HTML("<b>Interactive version</b> (needs a live kernel): move the sliders to redraw."))
        w.interact(redraw, **{k: _as_widget(k, v) for k, v in sliders.items()})
    return result


def _slider_values(control) -> list:
    """Each end and the middle of a slider (every option of a dropdown)."""
    if hasattr(control, "options"):
        return [o[1] if isinstance(o, tuple) else o for o in control.options]
    lo, hi, step = control.min, control.max, control.step
    middle = lo + round((hi - lo) / 2 / step) * step
    return [lo, type(lo)(middle) if isinstance(lo, int) else middle, hi]


def _is_panel(obj, panel_type) -> bool:
    """isinstance(obj, panel_type), False for a weak proxy whose object is gone (gc still lists the proxy)."""
    try:
        return isinstance(obj, panel_type)
    except ReferenceError:
        return False


def drive_sliders() -> list[dict]:
    """Move every live ``interact`` slider of this kernel through its range, as a person would.

    For each control of each live ``ipywidgets.interactive``: set each end and the middle in turn and record
    how many figures that redraw displayed and any exception the callback raised (``interact`` would only
    print it). Run it in the notebook's kernel after "Run All" (the course's tests do); each row should say
    ``figures == 1`` and ``error is None``.
    """
    import gc
    import warnings

    import ipywidgets as w
    from IPython import get_ipython

    shell = get_ipython()
    published, errors = [], []
    original_publish, original_showtraceback = shell.display_pub.publish, shell.showtraceback

    def publish(data, *args, **kwargs):
        published.append(sorted(data))
        return original_publish(data, *args, **kwargs)

    def showtraceback(*args, **kwargs):
        import sys
        import traceback

        errors.append("".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip())

    rows = []
    shell.display_pub.publish, shell.showtraceback = publish, showtraceback
    try:
        with warnings.catch_warnings():  # isinstance() on every live object wakes deprecated lazy attributes
            warnings.simplefilter("ignore")
            panels = [o for o in gc.get_objects() if _is_panel(o, w.interactive)]
        for panel in panels:
            for control in panel.kwargs_widgets:
                for value in _slider_values(control):
                    del published[:], errors[:]
                    if control.value == value:
                        panel.update()
                    else:
                        control.value = value  # interact redraws on the change
                    figures = sum("image/png" in kinds for kinds in published)
                    rows.append({"function": panel.f.__name__, "control": control.description, "value": value,
                                 "figures": figures, "error": errors[0] if errors else None})
    finally:
        shell.display_pub.publish, shell.showtraceback = original_publish, original_showtraceback
    return rows
