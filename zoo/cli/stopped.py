"""How every command ends: the open runs it leaves, after Ctrl-C or SIGTERM (zoo.runtime.stopping) or a
failure, are closed, and a stopped command says so in one line and exits 130 or 143.

``zoo-train`` (and ``zoo-ablate`` through it), ``zoo-diagnose`` and ``zoo-pretrained`` share this
path: the signal is recorded by zoo.runtime.stopping's handlers (installed by each command's ``main``),
raised again where a library swallowed it (:func:`zoo.runtime.stopping.stop_behind`: TensorFlow turns
a raise inside its graph tracing into a ``SystemError``), each run the process still has open is
ended KILLED with ``zoo.outcome=killed`` and ``zoo.killed`` (zoo.tracking.repair.close_owned),
and the process leaves through :func:`zoo.runtime.stopping.leave`, which bounds interpreter exit.
"""
from __future__ import annotations

import sys
from typing import NoReturn

import zoo.runtime.stopping as stopping
from zoo.tracking import repair


def close_open_runs(status: str, why: str) -> str:
    """End this process's open runs (a sweep's parent, a job cut short) and the jobs of workers
    that died with it; what was done, in words. For a stop (KILLED) the count is every run the
    stop ended, the job's own run that zoo.training.run ended first included; for FAILED, what was
    still open (jobs that failed before were counted by the sweep going on)."""
    closed = repair.close_owned(status, why)
    repaired = repair.repair_stores()  # joblib's workers are gone by now: their runs are orphans
    count = sum(1 for s in repair.ended.values() if s == "KILLED") if status == "KILLED" else len(closed)
    return (f"ended {count} open run(s) as {status}"
            + (f"; repaired {len(repaired)} orphaned run(s) (their process is gone, e.g. a joblib worker)"
               if repaired else ""))


def end(prog: str, stop: BaseException) -> NoReturn:
    """The last words of a command a signal stopped (``stop``: the KeyboardInterrupt, or
    zoo.runtime.stopping.Terminated): its open runs KILLED, one line, exit 130 (SIGINT) or 143 (SIGTERM)
    within zoo.runtime.stopping's bounds. A second signal meanwhile does not cut this short."""
    name = stopping.name_of(stop)
    closed = close_open_runs("KILLED", name)
    print(f"{prog}: stopped by {name}; {closed}", file=sys.stderr)
    stopping.leave(stopping.exit_code(name))


def as_stop(err: BaseException) -> BaseException | None:
    """``err`` itself when it is a stop (Ctrl-C, SIGTERM), the stop a signal asked for when a
    library turned its raise into ``err`` (zoo.runtime.stopping.stop_behind), else None."""
    return err if isinstance(err, KeyboardInterrupt) else stopping.stop_behind(err)
