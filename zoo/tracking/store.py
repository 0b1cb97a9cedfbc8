"""Opening an MLflow store safely: checked before TensorFlow loads, created whole or not at all,
and opened by several processes at once.

**Checked first** (:func:`check_for_run`, :func:`check_for_reading`, :func:`check_server`;
standard library only, a few milliseconds): a run writes, so its sqlite store's folder must take
a new file (tried, not asked: ``os.access`` says yes to root on /proc, /sys and read-only
mounts), its disk must have :data:`MIN_FREE_BYTES` free, the lock file beside it must be a file,
and an existing store must be a whole MLflow store (a SQLite header, not truncated, MLflow's
schema at this MLflow's version, sqlite's ``quick_check``) whose experiment is not deleted. Each
problem is a :class:`StoreError`: one line saying what is wrong and what to do. A query string
(``?mode=ro``) is refused for a run: neither MLflow nor SQLAlchemy honours it without
``uri=true``, so the run was written anyway, and a ``file:`` store name is what it needs.

**Created whole** (:func:`client`): MLflow creates and migrates a new sqlite store in place, in
~70 steps over ~1.5 s; an interrupt in between left a half-migrated file that every later
command refused ("table ... already exists"). So a new store is built in a temporary file beside
the target (``.mlflow.db.creating-XXXX``, same folder hence same file system) and moved into
place with ``os.replace``, which is atomic: an interrupt at any moment leaves no store or a
whole one. A temporary file an interrupted creation left is deleted by the next creation.

**Several processes**: two first runs at once on a store that does not exist yet (the
default ``sqlite:///mlflow.db`` in two terminals) would both create it; so the first open of a
sqlite store in a process happens under an exclusive lock on ``<db>.lock`` beside it: the second
process waits, then finds the store made. The file is switched to write-ahead logging then
(:func:`_write_ahead_log`). Server stores are returned as they are.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import logging
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
import urllib.parse
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
# Below this a run is refused before it starts: a default run adds ~0.5 MB (store rows, plots,
# statistics, model), a quick study ~5 MB, and sqlite needs room for its journal; 50 MiB is ~100
# runs of headroom, so a disk that refuses is one that would fail mid-run, with a torn record.
MIN_FREE_BYTES = 50 * 2**20
# quick_check reads every page: 0.11 s for 92 MiB here (page cache warm); a bigger store skips
# it, so that a sweep, which checks before every job, stays fast
QUICK_CHECK_MAX_BYTES = 256 * 2**20
CREATING = ".creating-"  # infix of the temporary file a new store is built in
BUSY_SECONDS = 2.0  # how long a check waits for a writer's lock before giving up
# MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set ("maintenance mode", no
# new features); the zoo's checks, atomic creation and artifact layout are the sqlite store's.
FILE_STORE_RETIRED = ("MLflow 3 retired file stores (file:PATH, plain paths); use sqlite:///PATH/mlflow.db "
                      "(mlflow migrate-filestore converts an existing one)")


# Stores this process holds SQLite connections to (MLflow's, opened by _prepared). SQLite's
# locks are POSIX advisory locks, which belong to the process and are all dropped when the
# process closes *any* descriptor of the file ("How To Corrupt An SQLite Database", sec. 2.2):
# a check that opened and closed the live database with os.open/open() dropped the shared lock
# MLflow's connection holds in WAL mode, and other processes writing the store then met "disk
# I/O error" (a sweep checks the store before each job, in the process that holds the parent's
# connection). Such a store is checked through SQLite only.
_OPEN_HERE: set[str] = set()


def _opened_here(db: Path) -> bool:
    return str(Path(db).resolve()) in _OPEN_HERE


class StoreError(ValueError):
    """A tracking store that cannot be used as asked; the message is one line (what SQLite or
    the system said is joined onto it): what is wrong and what to do."""

    def __init__(self, message: str):
        super().__init__(re.sub(r"\s*\n\s*", " ", message).strip())


# --- naming -------------------------------------------------------------------------------------
def _split(uri: str) -> tuple[str, str]:
    rest = uri[len("sqlite:///"):]
    path, _, query = rest.partition("?")
    return path, query


def sqlite_path(uri: str) -> Path | None:
    """sqlite:///rel.db -> rel.db; sqlite:////abs.db -> /abs.db (a query string is not part of
    the file's name); None for other stores."""
    return Path(_split(uri)[0]) if uri.startswith("sqlite:///") else None


def sqlite_query(uri: str) -> str:
    """The query string of a sqlite URI ('' for none): ``sqlite:///m.db?mode=ro`` -> 'mode=ro'."""
    return _split(uri)[1] if uri.startswith("sqlite:///") else ""


def is_read_only(uri: str) -> bool:
    """The URI asks SQLite to read only (``?mode=ro`` or ``?immutable=1``)."""
    query = urllib.parse.parse_qs(sqlite_query(uri), keep_blank_values=True)
    return query.get("mode") == ["ro"] or query.get("immutable") == ["1"]


def lock_path(db: Path) -> Path:
    """The lock file beside ``db`` under which the store is created."""
    return db.resolve().with_name(db.name + ".lock")


# --- checks before TensorFlow -------------------------------------------------------------------
def _nearest_folder(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def _probe_writable(folder: Path) -> None:
    """Create and delete a file in ``folder``: the only answer that holds for root, /proc, /sys,
    read-only mounts and full inode tables alike. Raises OSError."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".zoo-probe-")
    os.close(fd)
    os.unlink(name)


def check_folder(path: Path, what: str, min_free: int = 0) -> None:
    """``path`` is a writable folder or can be made inside one, on a disk with at least
    ``min_free`` bytes free. Raises StoreError starting with ``what``."""
    folder = _nearest_folder(path)
    if not folder.is_dir():
        raise StoreError(f"{what}: {str(folder)!r} is a file, not a folder")
    try:
        _probe_writable(folder)
    except OSError as err:
        raise StoreError(f"{what}: folder {str(folder)!r} does not take new files ({err.strerror})") from None
    if min_free:
        free = shutil.disk_usage(folder).free
        if free < min_free:
            raise StoreError(f"{what}: only {free / 2**20:.1f} MiB free on the disk of {str(folder)!r} "
                             f"(a run needs {min_free / 2**20:.0f} MiB); free some space or choose "
                             f"another tracking.uri")


def _check_lock(db: Path) -> None:
    lock = lock_path(db)
    if not os.path.lexists(lock):
        return  # made when the store is first opened; the folder probe said a file can be
    if lock.is_dir():
        raise StoreError(f"{str(lock)!r} is a folder, not the store's lock file; remove it (rmdir)")
    if not lock.is_file():
        raise StoreError(f"{str(lock)!r} is not a regular file, so it cannot be the store's lock "
                         f"file; remove it")
    try:
        os.close(os.open(lock, os.O_RDWR | os.O_APPEND))
    except OSError as err:
        raise StoreError(f"cannot open the store's lock file {str(lock)!r} ({err.strerror})") from None


@functools.lru_cache(maxsize=1)
def _schema_head() -> str | None:
    """This MLflow's newest schema revision, read from its alembic scripts as text (importing
    MLflow costs ~1.5 s, more than the whole check may take); None if they cannot be read."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    revisions, parents = set(), set()
    versions = Path(spec.submodule_search_locations[0]) / "store" / "db_migrations" / "versions"
    for script in versions.glob("*.py"):
        text = script.read_text(errors="replace")
        if found := re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.M):
            revisions.add(found[1])
        down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
        if down:
            parents.update(re.findall(r"['\"](\w+)['\"]", down[1]))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def connect_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection to an existing store (``zoo-runs repair --dry-run``): no lock file,
    no journal-mode change; nothing written but SQLite's own -wal/-shm files. A WAL store
    in a folder this process cannot write, whose -shm is gone, opens only as immutable: then no
    writer has it open (a writer would have made the -shm), so the file is all there is."""
    name = urllib.parse.quote(str(db.absolute()))
    conn = sqlite3.connect(f"file:{name}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.Error as err:
        conn.close()
        if not (isinstance(err, sqlite3.OperationalError) and "unable to open" in str(err)):
            raise
    return sqlite3.connect(f"file:{name}?immutable=1", uri=True, timeout=BUSY_SECONDS)


def _header_problem(db: Path, size: int) -> str | None:
    """What the file's first 100 bytes (SQLite's header) say is wrong with it, or None."""
    with open(db, "rb") as handle:
        header = handle.read(100)
    if not header.startswith(SQLITE_HEADER[:len(header)]) or not header:
        return f"is not a SQLite database (it starts with {header[:16]!r})"
    if len(header) < 100:
        return f"is truncated ({size} bytes, less than SQLite's 100-byte header)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # the page count is valid only when its version stamp matches the change counter
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        return f"is truncated ({size} bytes; its header says {pages * page_size})"
    return None


def inspect_store(db: Path, write: bool = True, experiment: str | None = None) -> None:
    """``db`` (an existing file) is a whole MLflow store: a SQLite file, not truncated, with
    MLflow's tables (for writing: at this MLflow's schema version, and sqlite's quick_check
    passes), in which ``experiment`` is not deleted. Read-only, standard library only.
    Raises StoreError."""
    aside = f"move it aside (mv {db} {db}.bad) and a new store is made"
    try:
        size = db.stat().st_size
        problem = _header_problem(db, size) if size and not _opened_here(db) else None
    except OSError as err:
        raise StoreError(f"cannot read {str(db)!r} ({err.strerror})") from None
    if size == 0:
        raise StoreError(f"{str(db)!r} is empty (0 bytes), not an MLflow store; {aside}")
    if problem:
        raise StoreError(f"{str(db)!r} {problem}; restore it from a backup or {aside}")
    try:
        with contextlib.closing(connect_read_only(db)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables or not {"experiments", "runs", "tags"} <= tables:
                shown = ", ".join(sorted(tables)[:4]) + (", …" if len(tables) > 4 else "")
                raise StoreError(f"{str(db)!r} is a SQLite database but not an MLflow store "
                                 f"({f'its tables: {shown}' if tables else 'no tables'}); {aside}")
            version = (conn.execute("SELECT version_num FROM alembic_version").fetchone() or [None])[0]
            if version is None:
                raise StoreError(f"{str(db)!r} has MLflow's tables but no schema version: a creation "
                                 f"that was interrupted; {aside}")
            head = _schema_head() if write else None
            if head and version != head:
                raise StoreError(f"{str(db)!r} holds MLflow schema {version}, not this MLflow's {head}: "
                                 f"an interrupted creation or another MLflow version's store; back it up "
                                 f"and run 'mlflow db upgrade sqlite:///{db}', or {aside}")
            if write and size <= QUICK_CHECK_MAX_BYTES:
                verdict = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
                if verdict != "ok":
                    raise StoreError(f"{str(db)!r} is damaged (sqlite quick_check: {verdict}); restore it "
                                     f"from a backup or {aside}")
            if experiment is not None:
                row = conn.execute("SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?",
                                   (experiment,)).fetchone()
                if row and row[1] == "deleted":
                    raise deleted_experiment(experiment, row[0], f"sqlite:///{db}")
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            raise StoreError(f"{str(db)!r} stayed locked by another process for {BUSY_SECONDS:g} s "
                             f"({err}); try again") from None
        raise StoreError(f"{str(db)!r} cannot be read by SQLite ({err}); restore it from a backup "
                         f"or {aside}") from None
    except sqlite3.DatabaseError as err:
        raise StoreError(f"{str(db)!r} is not a readable SQLite database ({err}); restore it from "
                         f"a backup or {aside}") from None


class DeletedExperiment(StoreError):
    """The run's experiment exists in the store, deleted (MLflow refuses a run in it, but only
    once TensorFlow is up)."""


def deleted_experiment(name: str, experiment_id, uri: str) -> DeletedExperiment:
    """The error for a run into a deleted experiment: how to restore it, or what else to do."""
    return DeletedExperiment(
        f"experiment {name!r} (id {experiment_id}) is deleted in {uri}; restore it (MLFLOW_TRACKING_URI={uri} "
        f"mlflow experiments restore --experiment-id {experiment_id}) or choose another tracking.experiment")


def check_for_run(uri: str, experiment: str | None = None, min_free: int = MIN_FREE_BYTES) -> None:
    """A run can write to the sqlite store ``uri`` (``sqlite:///PATH``) and find ``min_free``
    bytes free: see the module's docstring. Standard library only; creates and deletes one probe
    file. Raises StoreError."""
    path, query = _split(uri)
    if query:
        why = ("asks for a read-only store, and a run writes its records" if is_read_only(uri)
               else "is not honoured: MLflow opens sqlite:///PATH as it is")
        raise StoreError(f"{uri!r}: the query string '?{query}' {why}; use sqlite:///PATH without one "
                         f"(zoo-runs repair --dry-run reads a read-only store)")
    db = Path(path)
    if db.is_dir():
        raise StoreError(f"{path!r} is a folder, not a database file")
    check_folder(db.parent, f"cannot {'write' if db.is_file() else 'create'} {path!r}", min_free)
    _check_lock(db)
    if os.path.lexists(db):
        if not db.is_file():
            raise StoreError(f"{path!r} is not a regular file; move it aside or choose another tracking.uri")
        try:  # opened for writing, not written: a file mode or a read-only mount says no here
            if not _opened_here(db):  # (not a descriptor of a live store: see _OPEN_HERE)
                os.close(os.open(db, os.O_RDWR))
        except OSError as err:
            raise StoreError(f"{path!r} is not writable ({err.strerror}); zoo-runs repair --dry-run "
                             f"reads it, a run cannot") from None
        inspect_store(db, write=True, experiment=experiment)


def check_for_reading(uri: str) -> None:
    """``zoo-runs repair --dry-run`` can read the sqlite store ``uri``: no query string but
    ``mode=ro``/``immutable=1``, and a store that is absent (no runs) or an MLflow store.
    Creates nothing. Raises StoreError."""
    path, query = _split(uri)
    if query and not is_read_only(uri):
        raise StoreError(f"{uri!r}: the query string '?{query}' is not honoured; use sqlite:///PATH "
                         f"or sqlite:///PATH?mode=ro")
    db = Path(path)
    if db.is_dir():
        raise StoreError(f"{path!r} is a folder, not a database file")
    if db.is_file():
        inspect_store(db, write=False)


def check_server(uri: str, timeout: float = 3.0, experiment: str | None = None, otherwise: str = "") -> None:
    """An MLflow server answers ``GET /health`` at ``uri`` within ``timeout`` s (MLflow's own
    client retries for minutes), and ``experiment`` is not deleted there. Raises StoreError;
    ``otherwise`` ends the message of a server that does not answer (the caller's other way)."""
    import json
    from urllib.error import HTTPError, URLError
    from urllib.request import urlopen

    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        raise StoreError(f"needs a host, http(s)://HOST:PORT; got {uri!r}")
    health = uri.rstrip("/") + "/health"
    try:
        with urlopen(health, timeout=timeout) as response:
            response.read(64)
    except HTTPError as err:
        raise StoreError(f"{health} answered HTTP {err.code}: not an MLflow server?") from None
    except (URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(f"no MLflow server answers at {uri} within {timeout:g} s ({reason}); start one "
                         f"(zoo-server start --root DIR, or mlflow server --host 127.0.0.1 --port 5000){otherwise}") from None
    if experiment is None:
        return
    query = urllib.parse.urlencode({"experiment_name": experiment})
    try:
        with urlopen(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?{query}",
                     timeout=timeout) as response:
            found = json.loads(response.read()).get("experiment", {})
    except (OSError, ValueError):  # 404: no such experiment yet (made on first use); else MLflow says
        return
    if found.get("lifecycle_stage") == "deleted":
        raise deleted_experiment(experiment, found.get("experiment_id"), uri)


# --- creating and opening -----------------------------------------------------------------------
@contextlib.contextmanager
def _exclusive(lock: Path):
    import fcntl

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync(path: Path | str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(db: Path) -> None:
    """Build a new, fully migrated store in a temporary file beside ``db`` and move it into
    place. Called under the lock: any earlier temporary file is an interrupted creation's."""
    from mlflow.store.db.utils import _initialize_tables, _verify_schema, create_sqlalchemy_engine

    db.parent.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(glob.escape(str(db.parent / f".{db.name}{CREATING}")) + "*"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    tmp = str(db.parent / f".{db.name}{CREATING}{secrets.token_hex(4)}")
    # an empty file is an empty database to SQLite; 0o666 less the umask, as SQLite makes its files
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        # MLflow's own first-open steps (SqlAlchemyStore.__init__), on an engine of our own so that
        # it can be closed before the move: MLflow keeps its engines open for the process
        engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
            _verify_schema(engine)
        finally:
            engine.dispose()
        _fsync(tmp)
        os.replace(tmp, db)
        _fsync(db.parent, directory=True)  # the rename itself survives a power cut
    except BaseException:  # Ctrl-C included: leave nothing half-made behind
        for leftover in glob.glob(glob.escape(tmp) + "*"):  # the file and its -journal
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise


@functools.lru_cache(maxsize=None)
def _prepared(uri: str) -> bool:
    """Create (whole) and open the store once per process, under the lock; quiet on stderr."""
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is None:
        return True
    if sqlite_query(uri):  # the checks before a run refuse these; a direct caller learns why here
        raise StoreError(f"{uri!r}: a query string is not honoured; use sqlite:///PATH")
    quiet = [logging.getLogger(n) for n in ("alembic", "mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store")]
    levels = [q.level for q in quiet]
    try:
        for q in quiet:
            q.setLevel(logging.WARNING)
        with _exclusive(lock_path(db)):
            if not db.exists():
                _create(db)
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
            _OPEN_HERE.add(str(db.resolve()))
            _write_ahead_log(db)
    finally:
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    return True


def _write_ahead_log(db: Path) -> None:
    """Put the database in WAL mode (kept in the file): readers no longer block the writer and a
    commit appends to the log instead of rewriting pages, so parallel jobs (joblib, Ray) wait
    far less for the file's single write lock. Not for a file on NFS (SQLite's own caveat); a
    team shares a server (tracking=server) instead. Done after the move into place: the -wal
    file is named after the database file."""
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as conn:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            conn.execute("PRAGMA journal_mode=WAL")


def client(uri: str):
    """An MlflowClient on ``uri`` whose store is known to exist and be migrated. Raises
    StoreError for a sqlite URI with a query string."""
    from mlflow import MlflowClient

    _prepared(uri)
    return MlflowClient(tracking_uri=uri)
