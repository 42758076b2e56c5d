"""Ctrl-C and SIGTERM during training: finish the step, checkpoint it, then stop.

With an ``out_dir``, in the main thread, a first SIGINT or SIGTERM during the loop only sets a
flag: the step under way finishes, a checkpoint of it is written exactly like a periodic one, and
:class:`~cutpaste_lib.train.TrainingInterrupted` is raised (``resume=True`` then continues bit for
bit). The first signal puts the previous handlers back, so a second one interrupts at once; they
are also put back when training ends. Without an ``out_dir`` (nowhere to save) the signals keep
their usual effect.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

STOP_SIGNALS = ("SIGINT", "SIGTERM")


@contextlib.contextmanager
def stop_requests(enabled: bool) -> Iterator[list[str]]:
    """Turn a first SIGINT/SIGTERM into a stop request that the loop reads between steps.

    Yields a list that receives the signal's name. The first signal also puts the previous
    handlers back, so a second one interrupts at once (Ctrl-C twice: ``KeyboardInterrupt``);
    leaving the block puts them back too. Nothing is installed unless ``enabled`` and in the
    main thread (``signal.signal`` raises elsewhere); an ignored signal (``SIG_IGN``, as in a
    script's background job) stays ignored.
    """
    received: list[str] = []
    previous: dict[int, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.getsignal(signum)

    def restore() -> None:
        for signum, handler in previous.items():  # None: set outside Python, i.e. the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def request_stop(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        restore()

    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield received
    finally:
        restore()
