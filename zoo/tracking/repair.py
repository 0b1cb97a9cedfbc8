"""No run left RUNNING: who owns an open run, closing a process's runs on the way out, and
closing the runs whose process is gone (``zoo-runs repair``).

Every run and sweep parent is tagged with its owner, ``zoo.owner.host`` and ``zoo.owner.pid``,
and a heartbeat ``zoo.heartbeat`` (epoch seconds, zoo.tracking.provenance), which a daemon
thread of the owning process refreshes every BEAT_SECONDS while the run is open
(:func:`keep_alive`). Ctrl-C and SIGTERM end a process's open runs as KILLED on the way out
(:func:`close_owned`, called by zoo.cli.train); SIGKILL, the OOM killer or a lost machine cannot, so
a RUNNING run is an *orphan* when

- its owner pid is dead on this host (no such process, a zombie, or a process that started
  after the run did: the pid was reused), or
- its heartbeat is older than STALE_SECONDS (the owner is on another host, or hung).

:func:`repair` ends orphans as KILLED with ``zoo.outcome=killed`` and ``zoo.repaired`` saying
when and why; ``zoo-ablate STUDY`` repairs the study's experiment before launching. RUNNING runs
without owner tags (made before owners were recorded) are left alone unless ``--unowned``.
The command line, ``zoo-runs repair``, is zoo.cli.runs.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from zoo.tracking.store import client, connect_read_only, sqlite_path

log = logging.getLogger("zoo")

OWNER_HOST, OWNER_PID, HEARTBEAT = "zoo.owner.host", "zoo.owner.pid", "zoo.heartbeat"
BEAT_SECONDS = 30.0
STALE_SECONDS = 300.0  # ten missed beats


def owner_tags() -> dict[str, str]:
    """This process as the owner of a run it is about to create, alive now."""
    return {OWNER_HOST: socket.gethostname(), OWNER_PID: str(os.getpid()), HEARTBEAT: str(int(time.time()))}


# --- the owning process -------------------------------------------------------------------------
_stores: set[tuple[str, str]] = set()  # (uri, experiment) this process has opened runs in
_lock = threading.Lock()
_beat: threading.Thread | None = None
_beat_pid: int | None = None
ended: dict[str, str] = {}  # run id -> status, for the runs this process ended other than FINISHED


def record_end(run_id: str, status: str) -> None:
    """Note that this process ended ``run_id`` as ``status`` (its job's own run, a sweep's parent,
    what :func:`close_owned` closed): a stop's message counts them."""
    if status != "FINISHED":
        ended[run_id] = status


def _may_own_runs(uri: str) -> bool:
    """Whether this process can have open runs in ``uri``: not if it never imported MLflow (every
    run is made by an MLflow client), nor in a sqlite store that does not exist. Looking would
    cost the stop seconds: importing MLflow, and creating and migrating the store, only to
    find it empty (a signal during the TensorFlow import took 7-10 s to stop that way)."""
    if "mlflow" not in sys.modules:
        return False
    db = sqlite_path(uri)
    return db is None or db.is_file()


def _owned_filter() -> str:
    return (f"tags.`{OWNER_HOST}` = '{socket.gethostname()}' and tags.`{OWNER_PID}` = '{os.getpid()}' "
            "and attributes.status = 'RUNNING'")


def _owned_runs(uri: str, experiment: str):
    db = sqlite_path(uri)
    if db is not None and not db.is_file():  # no store, no runs: do not create one on the way out
        return None, []
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return c, (c.search_runs([exp.experiment_id], _owned_filter(), max_results=1000) if exp else [])


def _beat_loop() -> None:
    while True:
        time.sleep(BEAT_SECONDS)
        with _lock:
            stores = sorted(_stores)
        for uri, experiment in stores:
            try:
                c, runs = _owned_runs(uri, experiment)
                now = str(int(time.time()))
                for run in runs:
                    c.set_tag(run.info.run_id, HEARTBEAT, now)
            except Exception as err:  # e.g. "database is locked": the next beat tries again
                log.debug("heartbeat to %s failed: %s", uri, err)


def keep_alive(uri: str | None, experiment: str) -> None:
    """Refresh the heartbeat of this process's open runs in ``experiment`` of ``uri`` from now on
    (one daemon thread per process; a loky worker is a process of its own)."""
    global _beat, _beat_pid
    if not uri:
        return
    with _lock:
        _stores.add((uri, experiment))
        if _beat is None or _beat_pid != os.getpid() or not _beat.is_alive():
            _beat = threading.Thread(target=_beat_loop, name="zoo-heartbeat", daemon=True)
            _beat_pid = os.getpid()
            _beat.start()


def close_owned(status: str, why: str) -> list[str]:
    """End every RUNNING run this process owns as ``status``: KILLED (``zoo.outcome=killed``,
    ``zoo.killed`` = why, e.g. SIGINT) or FAILED (``zoo.outcome=failed``, ``zoo.error`` = why);
    the run ids. Runs that zoo.training.run already ended are not touched."""
    with _lock:
        stores = sorted(_stores)
    tags = {"zoo.outcome": "killed", "zoo.killed": why} if status == "KILLED" else \
        {"zoo.outcome": "failed", "zoo.error": why}
    closed = []
    for uri, experiment in stores:
        if not _may_own_runs(uri):
            continue
        try:
            c, runs = _owned_runs(uri, experiment)
            for run in runs:
                _end(c, run.info.run_id, status, tags)
                closed.append(run.info.run_id)
                record_end(run.info.run_id, status)
        except Exception as err:  # say so; the next zoo-runs repair finds them (dead pid)
            print(f"zoo: could not end the open runs in {uri}: {type(err).__name__}: {err}", file=sys.stderr)
    return closed


def repair_stores() -> list[Orphan]:
    """:func:`repair` every experiment this process has opened runs in (the jobs of joblib
    workers that died with an interrupted sweep)."""
    with _lock:
        stores = sorted(_stores)
    found = []
    for uri, experiment in stores:
        if not _may_own_runs(uri):  # nor then can the workers it started
            continue
        try:
            found += repair(uri, experiment)
        except Exception as err:
            print(f"zoo: could not repair {uri}: {type(err).__name__}: {err}", file=sys.stderr)
    return found


def _end(c, run_id: str, status: str, tags: dict[str, str], end_time: int | None = None) -> None:
    from mlflow.entities import RunTag

    c.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])
    c.set_terminated(run_id, status, end_time=end_time)


# --- orphans --------------------------------------------------------------------------------------
def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pid_state(pid: int, since: float) -> str | None:
    """Why ``pid`` on this host cannot be the owner of a run started at ``since`` (epoch s), or
    None if it may be. Linux reads /proc; elsewhere only existence is checked."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "is gone"
    except PermissionError:
        pass  # exists, another user's
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped since os.kill saw it (a pool joining
        return "is gone" if Path("/proc/self/stat").exists() else None  # its dead workers); no /proc: cannot tell
    except OSError:
        return None
    try:
        fields = text.rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, StopIteration, ValueError):
        return None
    if fields[0] in ("Z", "X"):
        return "is gone (a zombie)"
    started = boot + int(fields[19]) / _clock_ticks()
    if started > since + 2:  # btime is whole seconds
        return "is another process now (the pid was reused)"
    return None



def running(pid: int) -> bool:
    """A process runs as ``pid`` on this host now: not gone, not a zombie (a process started at
    any time may be it, hence an infinitely late ``since``)."""
    return pid_state(pid, math.inf) is None


@dataclass
class Orphan:
    run_id: str
    name: str
    reason: str
    last_seen_ms: int | None  # the last heartbeat, as the run's end time


def why_orphaned(run, now: float, host: str, unowned: bool = False) -> tuple[str, int | None] | None:
    """Why a RUNNING run is an orphan and when it was last alive (ms), or None if it may be alive."""
    tags = run.data.tags
    beat = tags.get(HEARTBEAT)
    last = int(float(beat)) if beat and beat.replace(".", "", 1).isdigit() else None
    last_ms = last * 1000 if last is not None else None
    if OWNER_PID not in tags:
        if unowned and now - run.info.start_time / 1000 > STALE_SECONDS:
            return f"no owner recorded and started {now - run.info.start_time / 1000:.0f} s ago", None
        return None
    owner_host, pid = tags.get(OWNER_HOST, "?"), tags[OWNER_PID]
    if owner_host == host and pid.isdigit():
        if int(pid) == os.getpid():
            return None  # ours: we are alive
        state = pid_state(int(pid), run.info.start_time / 1000)
        if state:
            return f"owner pid {pid} on {host} {state}", last_ms
    if last is not None and now - last > STALE_SECONDS:
        return f"heartbeat {now - last:.0f} s old (owner pid {pid} on {owner_host})", last_ms
    return None


def find_orphans(c, experiment_ids: list[str], unowned: bool = False, now: float | None = None) -> list[Orphan]:
    """The orphans among the RUNNING runs of ``experiment_ids``, through an MlflowClient."""
    now = time.time() if now is None else now
    host = socket.gethostname()
    found = []
    for run in c.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=50000):
        why = why_orphaned(run, now, host, unowned)
        if why:
            found.append(Orphan(run.info.run_id, run.info.run_name or "", *why))
    return found


def _sqlite_orphans(db: Path, experiment: str | None, unowned: bool) -> list[Orphan]:
    """:func:`find_orphans` of a sqlite store read with sqlite3 alone, read-only: the same runs
    MlflowClient.search_runs gives (RUNNING, not deleted, in the experiment of that name or in
    every active one), without a lock file, a journal-mode change, MLflow's import or a write,
    so that a dry run works on a store this process cannot write."""
    from types import SimpleNamespace


    with contextlib.closing(connect_read_only(db)) as conn:
        if experiment is None:
            ids = [r[0] for r in conn.execute("SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active'")]
        else:
            ids = [r[0] for r in conn.execute("SELECT experiment_id FROM experiments WHERE name = ?", (experiment,))]
        marks = ", ".join("?" * len(ids))
        rows = conn.execute(f"SELECT run_uuid, name, start_time FROM runs WHERE status = 'RUNNING' AND "
                            f"lifecycle_stage = 'active' AND experiment_id IN ({marks})", ids).fetchall() if ids else []
        runs = []
        for run_id, name, start_time in rows:
            tags = dict(conn.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
            runs.append(SimpleNamespace(info=SimpleNamespace(run_id=run_id, run_name=name, start_time=start_time or 0),
                                        data=SimpleNamespace(tags=tags)))
    now, host = time.time(), socket.gethostname()
    return [Orphan(run.info.run_id, run.info.run_name or "", *why) for run in runs
            if (why := why_orphaned(run, now, host, unowned))]


def check_store(uri: str, dry_run: bool = False, timeout: float = 3.0) -> None:
    """``zoo-runs repair`` can use ``uri``, checked in a few ms (a server in ``timeout`` s)
    instead of MLflow's minutes of retries or its tracebacks: a sqlite store that is absent or
    whole (read-only ones for a dry run only), a server that answers. Raises StoreError."""
    import zoo.tracking.store as store

    scheme = uri.partition(":")[0].lower() if ":" in uri else ""
    if uri.startswith("sqlite:///"):
        if dry_run:
            store.check_for_reading(uri)
            return
        if store.is_read_only(uri):
            raise store.StoreError(f"{uri!r} is read-only: add --dry-run to list the orphans, or drop "
                                   f"'?{store.sqlite_query(uri)}' to repair them")
        # an absent store has no orphans and is not made; a query string is refused, saying why
        if store.sqlite_query(uri) or store.sqlite_path(uri).is_file():
            store.check_for_run(uri, min_free=0)  # a repair writes a few tags
    elif scheme in ("http", "https"):
        store.check_server(uri, timeout)
    elif scheme in ("", "file"):
        raise store.StoreError(f"{uri!r}: {store.FILE_STORE_RETIRED}")


def repair(uri: str, experiment: str | None = None, dry_run: bool = False,
           unowned: bool = False) -> list[Orphan]:
    """Close the orphans of ``experiment`` (every experiment if None) as KILLED; what was closed
    (or, with ``dry_run``, would be). A sqlite store that does not exist yet has none; a sqlite
    store is read with sqlite3 (a dry run writes nothing, and works on a read-only store)."""
    db = sqlite_path(uri)
    if db is not None:
        if not db.is_file():
            return []
        orphans = _sqlite_orphans(db, experiment, unowned)
        c = client(uri) if orphans and not dry_run else None
    else:
        c = client(uri)
        if experiment is None:
            ids = [e.experiment_id for e in c.search_experiments()]
        else:
            exp = c.get_experiment_by_name(experiment)
            ids = [exp.experiment_id] if exp else []
        orphans = find_orphans(c, ids, unowned) if ids else []
    if not dry_run:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for o in orphans:
            _end(c, o.run_id, "KILLED", {"zoo.outcome": "killed", "zoo.repaired": f"{stamp}: {o.reason}"},
                 end_time=o.last_seen_ms)
    return orphans


def describe(orphans: list[Orphan], dry_run: bool = False) -> list[str]:
    verb = "would close" if dry_run else "closed"
    return [f"{verb} {o.run_id} ({o.name}) as KILLED: {o.reason}" for o in orphans]
