"""The frame every tf-vib plot shares: a headless figure, labels, grid, legend, PNG."""

import contextlib

__all__ = ["figure"]


@contextlib.contextmanager
def figure(path, *, size=(6.4, 4.2), xlabel, ylabel, title, legend=None):
    """Yield ``(plt, ax)`` of a new figure; on leaving, label it and save it to ``path``.

    Args:
      path: the PNG to write. size: inches.
      xlabel, ylabel, title: the axes' texts.
      legend: keyword arguments of ``ax.legend`` (default ``fontsize=8``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    try:
        yield plt, ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(**(legend or {"fontsize": 8}))
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
