"""Sliders for the parameters that beg to be moved, which degrade to a static figure when nobody can move them.

    from dfs.widgets import slider_figure
    slider_figure(plot_forward, t=(0, 999, 250), schedule=["linear", "cosine"])

``fn(**values)`` draws a matplotlib figure and returns it. In a live Jupyter kernel (inline or widget backend)
``slider_figure`` shows one ipywidgets control per parameter and redraws on change. Executed headless (papermill,
``dfs reproduce``, CI: no frontend, matplotlib on a non-interactive backend such as Agg) or outside IPython, or
with ``DFS_STATIC_WIDGETS=1``, it draws the figure once at the default values, displays it as a PNG (so the
executed notebook and the book keep it) and says which sliders a live kernel would show.

A range is ``(low, high, default)`` or ``(low, high, default, step)`` (integers give an integer slider) or a list of
choices (the first is the default).
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import ipywidgets as W
import matplotlib
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import Image, display

INTERACTIVE_BACKENDS = ("inline", "ipympl", "widget", "nbagg")


@dataclass(frozen=True)
class Control:
    name: str
    default: object
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple | None = None

    @property
    def integer(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high, self.default))

    def describe(self) -> str:
        if self.choices is not None:
            return f"{self.name} ∈ {{{', '.join(map(str, self.choices))}}}"
        return f"{self.name} ∈ [{self.low:g}, {self.high:g}]"


def parse_range(name: str, spec) -> Control:
    """One slider's specification; a clear error for anything else."""
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"slider {name!r}: a list of choices must not be empty")
        return Control(name, spec[0], choices=tuple(spec))
    if isinstance(spec, tuple) and len(spec) in (3, 4) and all(isinstance(v, (int, float)) for v in spec):
        low, high, default = spec[:3]
        if not low <= default <= high or low == high:
            raise ValueError(f"slider {name!r}: need low ≤ default ≤ high and low < high, got {spec}")
        step = spec[3] if len(spec) == 4 else (1 if all(isinstance(v, int) for v in spec[:3]) else (high - low) / 100)
        if step <= 0:
            raise ValueError(f"slider {name!r}: the step must be > 0, got {step}")
        return Control(name, default, low, high, step)
    raise ValueError(f"slider {name!r}: expected (low, high, default[, step]) or a list of choices, got {spec!r}")


def is_headless() -> bool:
    """True when no one can move a slider: not inside an IPython kernel, DFS_STATIC_WIDGETS=1, or matplotlib on a
    non-interactive backend (``dfs reproduce`` runs notebooks with MPLBACKEND=Agg)."""
    if os.environ.get("DFS_STATIC_WIDGETS", "").strip() not in ("", "0"):
        return True
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return True
    backend = matplotlib.get_backend().lower()
    return not any(b in backend for b in INTERACTIVE_BACKENDS)


def _display_png(fig) -> None:
    if get_ipython() is None:
        return
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    display(Image(data=buf.getvalue(), format="png"))


def slider_figure(fn: Callable, static: bool | None = None, **ranges):
    """Show ``fn(**values)``'s figure with a slider per parameter (a live kernel) or drawn once at the defaults
    (headless; ``static=True`` forces it). Returns the figure (static) or the ipywidgets box (live)."""
    if not callable(fn):
        raise TypeError(f"slider_figure needs a function that returns a figure, got {type(fn).__name__}")
    if not ranges:
        raise ValueError("slider_figure needs at least one parameter range, e.g. t=(0, 999, 500)")
    controls = [parse_range(k, v) for k, v in ranges.items()]
    defaults = {c.name: c.default for c in controls}
    if static is None:
        static = is_headless()
    if static:
        fig = fn(**defaults)
        if not hasattr(fig, "savefig"):
            raise TypeError(f"{getattr(fn, '__name__', 'fn')} must return a matplotlib figure, got {type(fig).__name__}")
        _display_png(fig)
        shown = ", ".join(f"{k} = {v}" for k, v in defaults.items())
        print(f"(static figure at {shown}; in a live Jupyter kernel sliders move "
              f"{'; '.join(c.describe() for c in controls)})")
        plt.close(fig)
        return fig
    return _live(fn, controls)


def _live(fn: Callable, controls: list[Control]):
    widgets = {}
    for c in controls:
        if c.choices is not None:
            widgets[c.name] = W.Dropdown(options=list(c.choices), value=c.default, description=c.name)
        elif c.integer:
            widgets[c.name] = W.IntSlider(value=c.default, min=c.low, max=c.high, step=int(c.step), description=c.name,
                                          continuous_update=False)
        else:
            widgets[c.name] = W.FloatSlider(value=c.default, min=c.low, max=c.high, step=c.step, description=c.name,
                                            continuous_update=False, readout_format=".3g")

    def draw(**values):
        fig = fn(**values)
        display(fig)
        plt.close(fig)

    out = W.interactive_output(draw, widgets)
    box = W.VBox([W.HBox(list(widgets.values())), out])
    display(box)
    return box
