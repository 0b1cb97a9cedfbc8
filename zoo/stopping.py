"""Ctrl-C and SIGTERM as one stop request that cannot be lost.

A Python signal handler runs in the main thread between two bytecodes, wherever that is: also
inside Python code that C++ calls back (TensorFlow's nest and type checks, for one), where the
exception it raises can be cleared by the caller and never seen. A sweep then trained its job
to the end and started the next one after SIGTERM (tests/test_interrupts.py, 1 start in 20).
So the handler first records the request, then raises; the loops that run for long
(:func:`check`: every training step, every job's start) raise it again if it was swallowed.
Nothing here imports TensorFlow.
"""
from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread, so that a run ends exactly as on Ctrl-C."""


_requested: str | None = None  # "SIGINT" | "SIGTERM" once asked, until reset()


def requested() -> str | None:
    """The signal that asked this process to stop, or None."""
    return _requested


def _on_sigterm(signum, frame):
    global _requested
    _requested = "SIGTERM"
    raise Terminated()


def _on_sigint(signum, frame):
    global _requested
    _requested = "SIGINT"
    raise KeyboardInterrupt()


def _submitit_bypass(handler) -> bool:
    """submitit's job runner sets SIGTERM to log "Bypassing signal SIGTERM" and go on (it waits
    for USR2 before a time limit); but SLURM's ``scancel`` and preemption send SIGTERM, then
    SIGKILL after ``KillWait``: ignored, the run was cut mid-write and left RUNNING."""
    func = getattr(handler, "__func__", None)
    return func is not None and func.__qualname__ == "SignalHandler.bypass" and \
        func.__module__.startswith("submitit.")


def install() -> None:
    """Route SIGTERM (``timeout``, ``kill``, a scheduler) and Ctrl-C through the handlers that
    record the request, in this process's main thread, unless someone set a handler of their
    own already (submitit's, which ignores SIGTERM, is taken over). Called by the command and by
    every job: a joblib (loky) worker is a process of its own and would otherwise die on the spot."""
    if threading.current_thread() is not threading.main_thread():
        return
    term = signal.getsignal(signal.SIGTERM)
    if term == signal.SIG_DFL or _submitit_bypass(term):
        signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def check() -> None:
    """Raise the stop again if a signal asked for it (its first raise may have been swallowed)."""
    if _requested == "SIGTERM":
        raise Terminated()
    if _requested == "SIGINT":
        raise KeyboardInterrupt()


def name_of(stop: BaseException) -> str:
    """"SIGTERM" or "SIGINT": which signal ``stop`` (a KeyboardInterrupt) stands for."""
    return "SIGTERM" if isinstance(stop, Terminated) or _requested == "SIGTERM" else "SIGINT"


def reset() -> None:
    """Forget a handled request (tests, and a process that goes on after handling one)."""
    global _requested
    _requested = None
