"""Ctrl-C and SIGTERM as one stop request that cannot be lost.

A Python signal handler runs in the main thread between two bytecodes, wherever that is: also
inside Python code that C++ calls back (TensorFlow's nest and type checks, for one), where the
exception it raises can be cleared by the caller and never seen. A sweep then trained its job
to the end and started the next one after SIGTERM (tests/test_interrupts.py, 1 start in 20).
So the handler first records the request, then raises; the loops that run for long
(:func:`check`: every training step, every job's start) raise it again if it was swallowed.
A SLURM job run by submitit (zoo.slurm) has submitit's handlers: its SIGTERM handler only logs
(scancel and preemption then cut the run with SIGKILL after ``KillWait``), so :func:`install`
takes SIGTERM over; its time-limit warning's handler (USR2) raises, and that raise is recorded
and raised again by :func:`check` like ours. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import os
import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread, so that a run ends exactly as on Ctrl-C."""


_requested: str | None = None  # "SIGINT" | "SIGTERM" once asked, until reset()
_raised: BaseException | None = None  # what submitit's timeout handler raised, until reset()


def requested() -> str | None:
    """The signal that asked this process to stop, or None."""
    return _requested


def _on_sigterm(signum, frame):
    """Record and raise the first SIGTERM; a repeat only records. A scheduler may send more than
    one (SLURM's ``scancel`` reaches a job's process directly and again through ``srun``): a
    second raise cut short the run's last writes (KILLED without ``zoo.outcome``); a first raise
    that was swallowed is raised again by :func:`check`."""
    global _requested
    if _requested == "SIGTERM":
        return
    _requested = "SIGTERM"
    raise Terminated()


def _on_sigint(signum, frame):
    global _requested
    _requested = "SIGINT"
    raise KeyboardInterrupt()


def _submitit(handler, name: str) -> bool:
    """Is ``handler`` submitit's ``SignalHandler.<name>`` (bound to its job's handler object)?"""
    func = getattr(handler, "__func__", None)
    return func is not None and func.__qualname__ == f"SignalHandler.{name}" and \
        func.__module__.startswith("submitit.")


def _kept(handler):
    """submitit's handler of its time-limit warning (USR2 by default): it resubmits the job or
    raises that it will not, and either way raises (SystemExit, UncompletedJobError) wherever
    the main thread is, which inside TensorFlow's callbacks can be swallowed: the job then
    trained on until SLURM killed it. This one also records what it raised, for check()."""
    def on_warning(signum, frame):
        global _raised
        try:
            handler(signum, frame)
        except BaseException as err:
            _raised = err
            raise

    on_warning.__wrapped__ = handler
    return on_warning


def install() -> None:
    """Route SIGTERM (``timeout``, ``kill``, a scheduler) and Ctrl-C through the handlers that
    record the request, in this process's main thread, unless someone set a handler of their
    own already (submitit's, which ignores SIGTERM, is taken over). Called by the command and by
    every job: a joblib (loky) worker is a process of its own and would otherwise die on the spot."""
    if threading.current_thread() is not threading.main_thread():
        return
    term = signal.getsignal(signal.SIGTERM)
    # submitit's job runner logs "Bypassing signal SIGTERM" and goes on (it waits for USR2
    # before a time limit); but scancel and preemption send SIGTERM, then SIGKILL after
    # KillWait: ignored, the run was cut mid-write and left RUNNING. Taken over.
    if term == signal.SIG_DFL or _submitit(term, "bypass"):
        signal.signal(signal.SIGTERM, _on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    warning = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if warning is not None and _submitit(signal.getsignal(warning), "checkpoint_and_try_requeue"):
        signal.signal(warning, _kept(signal.getsignal(warning)))


def check() -> None:
    """Raise the stop again if a signal asked for it (its first raise may have been swallowed)."""
    if _raised is not None:
        raise _raised
    if _requested == "SIGTERM":
        raise Terminated()
    if _requested == "SIGINT":
        raise KeyboardInterrupt()


def name_of(stop: BaseException) -> str:
    """"SIGTERM" or "SIGINT": which signal ``stop`` (a KeyboardInterrupt) stands for."""
    return "SIGTERM" if isinstance(stop, Terminated) or _requested == "SIGTERM" else "SIGINT"


def reset() -> None:
    """Forget a handled request (tests, and a process that goes on after handling one)."""
    global _requested, _raised
    _requested = _raised = None
