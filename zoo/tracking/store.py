"""Opening an MLflow store safely when several processes open it at once.

MLflow creates and migrates a new sqlite store on first use (``Creating initial database
tables``, then alembic migrations). Two processes that do that at once on a file that does not
exist yet race: one fails with ``duplicate column name`` or an alembic error. The README's
default ``sqlite:///mlflow.db`` makes two terminals' first runs exactly that case. So the first
open of a sqlite store in a process happens under an exclusive lock on ``<db>.lock`` beside it:
the second process waits, then finds the tables made; the file is switched to write-ahead
logging then (:func:`_write_ahead_log`). Other stores (a server, a file store) are returned as
they are.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """sqlite:///rel.db -> rel.db; sqlite:////abs.db -> /abs.db; None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _exclusive(lock_path: Path):
    import fcntl

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=None)
def _prepared(uri: str) -> bool:
    """Create and migrate the store once per process, under the lock; quiet on stderr."""
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return True
    quiet = [logging.getLogger(n) for n in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.WARNING)
        with _exclusive(db.resolve().with_name(db.name + ".lock")):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            _write_ahead_log(db)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return True


def _write_ahead_log(db: Path) -> None:
    """Put the database in WAL mode (kept in the file): readers no longer block the writer and a
    commit appends to the log instead of rewriting pages, so parallel jobs (joblib, Ray) wait
    far less for the file's single write lock. Not for a file on NFS (SQLite's own caveat); a
    team shares a server (tracking=server) instead."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")


def client(uri: str):
    """An MlflowClient on ``uri`` whose store is known to exist and be migrated."""
    from mlflow import MlflowClient

    _prepared(uri)
    return MlflowClient(tracking_uri=uri)
