"""One way to draw a PNG in ``lm``: a matplotlib ``Figure`` on the Agg canvas (no pyplot state,
safe in threads), saved through the one output rule (``_io.atomic_output``)."""

from __future__ import annotations

import io
import os
from typing import Any


def new_figure(width: float, height: float, dpi: int = 110) -> Any:
    """A ``matplotlib.figure.Figure`` with an Agg canvas; ValueError naming the ``[plot]`` extra when
    matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise ValueError("plot: matplotlib is not installed (pip install 'entropykit[plot]')") from exc
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike[str] | None, *, force: bool = True) -> bytes:
    """The figure as PNG bytes, also written atomically to ``path`` when given."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        from entropykit._io import atomic_output

        with atomic_output(path, force=force) as fh:
            fh.write(data)
    return data
