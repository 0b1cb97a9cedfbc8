"""Ctrl-C and SIGTERM as one stop request that cannot be lost, cannot be cut short, and ends in
seconds.

A Python signal handler runs in the main thread between two bytecodes, wherever that is: also
inside Python code that C++ calls back (TensorFlow's nest and type checks, for one) or in a
garbage-collector callback (JAX's, which TensorFlow imports when JAX is installed), where the
exception it raises is cleared or printed as "Exception ignored" and never seen. A sweep then
trained its job to the end and started the next one after SIGTERM (tests/test_interrupts.py, 1
start in 20); a diagnosis was logged FINISHED and its command exited 0 after SIGINT. So the
handler first records the request, then raises; :func:`check` raises it again if it was
swallowed: at every training step and job start, before a run (a job's, a diagnosis', a
sweep's parent) is written FINISHED, and before a command returns its exit code; and
where the caller made an error of its own of it (TensorFlow's tracing: ``SystemError``),
:func:`stop_behind` gives the stop back in its place.

Only the first signal raises. The stop's cleanup (the job's run ended as KILLED with its tags,
the sweep's parent, ``zoo.killed``) runs in ``except``/``finally`` blocks of the main thread,
where a second raise would cut it short: a second Ctrl-C 0.3 s after the first left runs
KILLED without their tags (issue 21). A second signal only says that the stop is under way; a
third (FORCE_AFTER) exits at once. So does a stop that is still running STOP_SECONDS after the
first signal (a store that no longer answers: MLflow retries an HTTP call for ~4 minutes). A
forced exit writes nothing more: the runs still open stay RUNNING with a dead owner pid, which
``zoo-runs repair`` and the next ``zoo-ablate`` end as KILLED (zoo.tracking.repair); none can be
FINISHED, which is written only once a run's report is complete.

The command leaves through :func:`leave`: interpreter exit joins every non-daemon thread
(concurrent.futures workers: MLflow's artifact up- and download pools) and runs ``atexit``
callbacks (MLflow's async logging queues flush there), without a time limit: a stop once
printed "stopped by SIGTERM" and waited 205 s more on an artifact thread (issue 21; MLflow
retries an HTTP call to a store that is gone for ~4 minutes). After :func:`leave` that wait is
at most EXIT_SECONDS, and the interpreter's final garbage collection is skipped.

A SLURM job run by submitit (zoo.launch.slurm) has submitit's handlers: its SIGTERM handler only logs
(scancel and preemption then cut the run with SIGKILL after ``KillWait``), so :func:`install`
takes SIGTERM over (SLURM may deliver it twice, directly and through ``srun``: the second is a
second signal, which does not raise); its time-limit warning's handler (USR2) raises, and that
raise is recorded and raised again by :func:`check` like ours. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
import time


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread, so that a run ends exactly as on Ctrl-C."""


STOP_SECONDS = 30.0  # first signal -> exit, whatever the cleanup waits for (it takes 0.1-3 s)
EXIT_SECONDS = 5.0   # cleanup done -> exit: what interpreter exit may wait for
FORCE_AFTER = 3      # the third signal of a stop exits at once
POLL_SECONDS = 0.25  # how often the watchdog looks at the deadline

_requested: str | None = None  # "SIGINT" | "SIGTERM" once asked, until reset()
_signals = 0                   # signals received since the stop was asked
# (time.monotonic() by which the process exits, why, with which code, whether runs may still be
# open), or None. Set by plain assignment, which a signal handler can do wherever it interrupts
# the main thread; a lock or an Event there could be one the interrupted code holds.
_deadline: tuple[float, str, int, bool] | None = None
_watchdog: threading.Thread | None = None
_raised: BaseException | None = None  # what submitit's timeout handler raised, until reset()


def requested() -> str | None:
    """The signal that asked this process to stop, or None."""
    return _requested


def exit_code(name: str) -> int:
    """What a shell reports for a process the signal ``name`` ended: 128 + its number."""
    return 143 if name == "SIGTERM" else 130


def _say(text: str) -> None:
    """One line on stderr, from a signal handler too (``print`` there can meet the stream
    locked by the code it interrupted: "reentrant call")."""
    try:
        os.write(2, (text + "\n").encode())
    except OSError:
        pass


def _flush_quietly() -> None:
    """Flush stdout and stderr before an exit that skips Python's own, whatever they hold."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a stream held by the interrupted code, or closed
            pass


def _force_exit(why: str, code: int, runs_open: bool = True) -> None:
    """Exit now with ``code``, writing nothing more to the store."""
    _flush_quietly()
    _say(f"zoo: {why}: exiting now" + ("; runs still open stay RUNNING until `zoo-runs repair` (or the "
                                        "next zoo-ablate) ends them as KILLED" if runs_open else ""))
    os._exit(code)


def _watch() -> None:
    """Daemon thread: force the exit once the deadline passes. A daemon thread runs on while
    interpreter exit joins the other threads and runs ``atexit``, which is where it is needed."""
    while True:
        time.sleep(POLL_SECONDS)
        deadline = _deadline
        if deadline is not None and time.monotonic() >= deadline[0]:
            _force_exit(*deadline[1:])


def _start_watchdog() -> None:
    global _watchdog
    if _watchdog is None or not _watchdog.is_alive():  # one per process (a loky worker's own)
        _watchdog = threading.Thread(target=_watch, name="zoo-stop-watchdog", daemon=True)
        _watchdog.start()


def _arm(seconds: float, why: str, code: int, runs_open: bool) -> None:
    """Exit with ``code`` at most ``seconds`` from now (an earlier deadline stays)."""
    global _deadline
    deadline = time.monotonic() + seconds
    if _deadline is None or deadline < _deadline[0]:
        _deadline = (deadline, why, code, runs_open)


def _on_signal(name: str, error: type[KeyboardInterrupt]) -> None:
    global _requested, _signals
    if _requested is None:
        _requested, _signals = name, 1
        _arm(STOP_SECONDS, f"still stopping {STOP_SECONDS:g} s after {name}", exit_code(name), True)
        raise error()
    _signals += 1
    if _signals >= FORCE_AFTER:
        _force_exit(f"{name}, the third signal of this stop", exit_code(_requested))
    # no raise: it would cut short the cleanup the first one started (runs left without tags)
    _say(f"zoo: still stopping after {_requested} (ending the open runs as KILLED); "
         f"{'Ctrl-C' if name == 'SIGINT' else name} once more exits at once")


def _on_sigterm(signum, frame):
    _on_signal("SIGTERM", Terminated)


def _on_sigint(signum, frame):
    _on_signal("SIGINT", KeyboardInterrupt)


_leaving: int | None = None  # the exit code once leave() was called


def _skip_finalization() -> None:
    """The last ``atexit`` callback (registered first, by :func:`install`): after a stop, end the
    process here. What follows is the interpreter's finalization, a garbage collection over
    TensorFlow's, Keras' and MLflow's modules that took 2-5 s of CPU on a loaded 2-core machine
    after every stop was written, and that no thread can cut short (daemon threads stop there).
    The streams and log files are flushed first; the store has every write committed."""
    if _leaving is None:
        return
    import logging

    logging.shutdown()
    _flush_quietly()
    os._exit(_leaving)


_exit_hook = False


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
    global _exit_hook
    _start_watchdog()  # here: a signal handler must not start threads
    if not _exit_hook:  # early, so that it runs after the atexit callbacks of what is imported later
        atexit.register(_skip_finalization)
        _exit_hook = True
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


def stop_behind(err: BaseException) -> KeyboardInterrupt | None:
    """The stop to raise in place of ``err`` when a signal asked for one: what a library made of
    the raise (TensorFlow's graph tracing turned a SIGTERM raised in a Python callback into
    ``SystemError: ... bad argument to internal function``, and the run ended FAILED, exit 1);
    None when no stop was asked, or ``err`` is the stop itself."""
    if isinstance(err, KeyboardInterrupt) or _requested is None:
        return None
    if _raised is not None:
        return None  # submitit's requeue: its own exception, raised again by check()
    return Terminated() if _requested == "SIGTERM" else KeyboardInterrupt()


def name_of(stop: BaseException) -> str:
    """"SIGTERM" or "SIGINT": which signal ``stop`` (a KeyboardInterrupt) stands for."""
    return "SIGTERM" if isinstance(stop, Terminated) or _requested == "SIGTERM" else "SIGINT"


def leave(code: int) -> None:
    """``sys.exit(code)`` for a stop whose cleanup is done: interpreter exit joins non-daemon
    threads and runs ``atexit`` callbacks as usual, for at most EXIT_SECONDS, and then ends the
    process without the interpreter's finalization (:func:`_skip_finalization`)."""
    global _leaving
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _leaving = code
    _start_watchdog()
    _arm(EXIT_SECONDS, f"still exiting {EXIT_SECONDS:g} s after the stop (a thread or exit handler that "
         "waits: MLflow's artifact pools, async logging)", code, False)
    sys.exit(code)


def reset() -> None:
    """Forget a handled request (tests, and a process that goes on after handling one)."""
    global _requested, _signals, _deadline, _raised
    _requested, _signals, _deadline, _raised = None, 0, None, None


@contextlib.contextmanager
def deferred():
    """Inside a library call in someone else's process (zoo.GradientMonitor writing its records
    into the user's run): Ctrl-C and SIGTERM are recorded, not raised, while the body writes
    what must be whole, and delivered when it is done, as the process's own handlers would
    have: SIGINT as ``KeyboardInterrupt`` (or the handler the process set), SIGTERM to the
    handler it had (the default one ends the process). A second signal raises at once (a write
    that hangs must not hold the user). Yields the list of signal names received so far; in a
    thread other than the main one (no signal reaches it) it only yields."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    got: list[str] = []
    # a signal the process ignores (a job started in the background: SIGINT is SIG_IGN) stays ignored
    numbers = {s: name for s, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM"))
               if signal.getsignal(s) is not signal.SIG_IGN}
    previous = {s: signal.getsignal(s) for s in numbers}

    def record(signum, frame):
        got.append(numbers[signum])
        if len(got) > 1:
            raise KeyboardInterrupt()

    for s in numbers:
        signal.signal(s, record)
    try:
        yield got
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if got:
        first = signal.SIGINT if got[0] == "SIGINT" else signal.SIGTERM
        handler = previous[first]
        if callable(handler):
            handler(first, None)
        elif handler == signal.SIG_DFL:
            if first == signal.SIGINT:
                raise KeyboardInterrupt()
            os.kill(os.getpid(), first)  # the default action, now the handler is back
