"""Child processes that die with datagen.

Every long-lived helper process datagen starts (the embedded llama server, the solver worker, tool
sandboxes) must not outlive the run that started it: a `datagen run` killed with SIGKILL would
otherwise leave a 380 MB server listening on its port, or a worker computing for nobody while a
resume starts a second one.

Two mechanisms, used together:

- `tied_popen_kwargs()` gives `subprocess.Popen` a `preexec_fn` that asks Linux to SIGKILL the child
  when its parent dies (`PR_SET_PDEATHSIG`). The kernel ties this to the *thread* that forked, so
  start tied children from the main thread or a thread that lives as long as the child.
- `watch_parent()` is for children that are datagen's own code: a daemon thread that exits the
  process as soon as its parent pid changes (works whatever thread started it, and on systems
  without prctl).

`sigterm_as_interrupt()` makes a SIGTERM run the same cleanup as Ctrl-C, so a terminated run stops
its children itself, cleanly, rather than leaving it to the kernel's SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once in the parent: loading a library between fork and exec in a threaded process can
# deadlock on a lock another thread held at the fork.
_PRCTL = _load_prctl() if sys.platform.startswith("linux") else None


def _set_pdeathsig(parent_pid: int) -> None:
    """Runs in the child between fork and exec."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died between fork and prctl: then nobody would ever send the signal.
    if os.getppid() != parent_pid:
        os._exit(1)


def tied_popen_kwargs() -> dict[str, Any]:
    """Keyword arguments for `subprocess.Popen` that make the child die with this process (Linux).
    Elsewhere it returns no arguments and the caller's own cleanup is all there is."""
    if _PRCTL is None:
        return {}
    parent = os.getpid()
    return {"preexec_fn": lambda: _set_pdeathsig(parent)}


def watch_parent(interval: float = 0.5, exit_code: int = 1) -> threading.Thread:
    """Start a daemon thread that ends this process (with `os._exit`, so a busy main thread cannot
    delay it) once the parent that started it has gone."""
    parent = os.getppid()

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(exit_code)

    thread = threading.Thread(target=loop, name="datagen-parent-watch", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM does what Ctrl-C does (`kill`, a service manager and CI runners
    send it), so the same cleanup runs: `finally` blocks stop child servers and flush journals,
    and asyncio cancels its tasks the way it does on SIGINT. Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: object) -> None:
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def pool_context():
    """`fork` when this process has one thread (fast start, and scripts without a `__main__` guard
    work), else `spawn` (forking a threaded process can deadlock)."""
    import threading

    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
