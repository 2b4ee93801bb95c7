"""Progress reporting shared by the CLI, the widgets and the core.

Long core functions take ``progress=None`` (or a callable
``progress(done, total, message)``) and call it as they go.  They may also
check ``cancel`` (a callable returning True when the user asked to stop) and
raise :class:`Cancelled`.  The CLI passes a tqdm bar through
:func:`tqdm_progress`; widgets pass a callback that a napari worker turns into
``yield`` progress updates.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Optional

ProgressCallback = Optional[Callable[[int, int, str], None]]
CancelCallback = Optional[Callable[[], bool]]

__all__ = ["Cancelled", "ProgressCallback", "CancelCallback", "report", "check_cancel", "tqdm_progress"]


class Cancelled(RuntimeError):
    """Raised by a core function when its ``cancel`` callback returned True."""


def report(progress: ProgressCallback, done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done, total, message)


def check_cancel(cancel: CancelCallback) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the user")


@contextmanager
def tqdm_progress(description: str = "", *, disable: bool | None = None):
    """A ``progress(done, total, message)`` callback that drives a tqdm bar."""
    from tqdm import tqdm

    bar = tqdm(desc=description, total=None, disable=disable, dynamic_ncols=True, leave=True)

    def callback(done: int, total: int, message: str = "") -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        yield callback
    finally:
        bar.close()
