"""A store is created whole or not at all, by one process at a time, and read without being
changed by a dry run (zoo.tracking.store, zoo-runs repair)."""
import shutil
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from conftest import EVENT_SECONDS, wait_for

CODE = """
import sys
from zoo.tracking.mlflow_sink import MlflowSink
sink = MlflowSink(sys.argv[1], "race")
sink.start(sys.argv[2], {"p": "1"}, {})
sink.log_metrics({"m": 1.0}, 1)
sink.finish("FINISHED")
print("ok")
"""


def test_two_processes_create_a_new_sqlite_store_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    for attempt in range(3):  # the race lost 3 of 3 times before the lock
        (tmp_path / "new").mkdir(exist_ok=True)
        procs = [subprocess.Popen([sys.executable, "-c", CODE, uri, f"run{attempt}-{i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        outs = [p.communicate(timeout=EVENT_SECONDS) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0 and "ok" in out, err[-2000:]
            assert "Creating initial database tables" not in err
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        shutil.rmtree(tmp_path / "new")  # the next attempt races on a fresh store again


def test_a_new_sqlite_store_logs_ahead_so_parallel_jobs_wait_less(tmp_path):
    """WAL mode is kept in the file: every later connection, MLflow's included, uses it."""
    import sqlite3

    from zoo.tracking.store import client

    db = tmp_path / "mlflow.db"
    client(f"sqlite:///{db}").create_experiment("wal")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert MlflowClient(f"sqlite:///{db}").get_experiment_by_name("wal") is not None


# --- a new store is created whole or not at all ---------------------------------------------------
def _usable(db) -> None:
    """The store is whole: the checks a run makes pass, and zoo-runs repair works on it."""
    from zoo.cli.runs import main
    from zoo.tracking.store import check_for_run

    check_for_run(f"sqlite:///{db}")
    assert main(["repair", "--uri", f"sqlite:///{db}"]) == 0


def _count_statements(stop_at=None):
    """Count the SQL statements every engine runs and raise KeyboardInterrupt (a Ctrl-C) just
    before statement ``stop_at``: (the count as a one-item list, a function that stops this)."""
    import sqlalchemy

    count = [0]

    def before(*args):
        count[0] += 1
        if count[0] == stop_at:
            raise KeyboardInterrupt

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", before)
    return count, lambda: sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", before)


def test_a_creation_interrupted_at_any_statement_leaves_no_store(tmp_path):
    """Ctrl-C anywhere in MLflow's ~70 migrations (the code before left a half-migrated store
    that every later command refused): no store and no temporary file after it; the next open
    makes a whole one."""
    from zoo.tracking import store

    count, stop = _count_statements()
    try:
        store._create(tmp_path / "probe.db")
    finally:
        stop()
    total = count[0]
    assert total > 100, total
    for n, at in enumerate([1, 2, total // 10, total // 4, total // 2, 3 * total // 4, total - 1, total]):
        db = tmp_path / str(n) / "mlflow.db"
        count, stop = _count_statements(stop_at=at)
        try:
            with pytest.raises(KeyboardInterrupt):
                store.client(f"sqlite:///{db}")
        finally:
            stop()
        assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db.lock"], at
    (db.parent / f".mlflow.db{store.CREATING}left-by-a-kill").write_bytes(b"half")
    (db.parent / f".mlflow.db{store.CREATING}left-by-a-kill-journal").write_bytes(b"half")
    store.client(f"sqlite:///{db}")
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlflow.db", "mlflow.db.lock"]  # leftovers cleaned
    _usable(db)


KILLED_CREATOR = "import sys\nfrom zoo.tracking.store import client\nclient(sys.argv[1])\n"


@pytest.mark.parametrize("sig", ["SIGINT", "SIGKILL"])
def test_a_creation_killed_by_a_signal_leaves_no_store_or_a_whole_one(tmp_path, sig):
    """As a user's Ctrl-C or the OOM killer: signals at several moments after the temporary
    file appears (MLflow takes ~1.5 s to migrate it)."""
    import os
    import signal
    import time

    from zoo.tracking.store import CREATING

    outcomes = []
    for n, delay in enumerate([0.0, 0.3, 0.8]):
        folder = tmp_path / str(n)
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", KILLED_CREATOR, f"sqlite:///{folder}/mlflow.db"],
                                stderr=subprocess.DEVNULL,  # SIGINT as a terminal leaves it (not a background job's)
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        wait_for("the store's temporary file", lambda: list(folder.glob(f".mlflow.db{CREATING}*")) or
                 proc.poll() is not None, poll=0.005)
        time.sleep(delay)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=EVENT_SECONDS)
        db = folder / "mlflow.db"
        outcomes.append(db.exists())
        if db.exists():
            _usable(db)
        if sig == "SIGINT":  # the interrupted process removed its temporary file itself
            assert not list(folder.glob(f".mlflow.db{CREATING}*"))
    assert outcomes != [True] * 3, "every signal came after the store was made: nothing was interrupted"


def test_a_new_store_has_the_modes_sqlite_would_give_it(tmp_path):
    import os
    import stat

    from zoo.tracking.store import client

    client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "mlflow.db").stat().st_mode) == 0o666 & ~umask


# --- zoo-runs repair on stores it can only read, or cannot reach ---------------------------------
def _store_with_an_orphan(folder):
    """A rollback-journal (not WAL) store with one RUNNING run whose owner is gone."""
    from zoo.tracking.repair import HEARTBEAT, OWNER_HOST, OWNER_PID

    import socket
    import time

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    c = MlflowClient(uri)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = c.create_run(c.create_experiment("e"), tags={OWNER_HOST: socket.gethostname(),
                                                       OWNER_PID: dead.stdout.strip(), HEARTBEAT: str(int(time.time()))})
    c._tracking_client.store.engine.dispose()  # MLflow keeps its connections open otherwise
    return folder / "mlflow.db", run.info.run_id


def _zoo_runs(*args, cwd):
    return subprocess.run([sys.executable, "-m", "zoo.cli.runs", "repair", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=EVENT_SECONDS)


def test_a_dry_run_on_a_read_only_uri_changes_nothing(tmp_path):
    """``?mode=ro`` works as root too (root ignores file modes): no lock file, no journal-mode
    change, the bytes unchanged; a repair (not dry) of a read-only URI is refused."""
    import hashlib
    import sqlite3

    db, run_id = _store_with_an_orphan(tmp_path)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    done = _zoo_runs("--uri", f"sqlite:///{db}?mode=ro", "--dry-run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"would close {run_id}" in done.stdout and "owner pid" in done.stdout
    assert not (tmp_path / "mlflow.db.lock").exists() and not list(tmp_path.glob("mlflow.db?*"))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    refused = _zoo_runs("--uri", f"sqlite:///{db}?mode=ro", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.splitlines() == [
        f"zoo-runs: 'sqlite:///{db}?mode=ro' is read-only: add --dry-run to list the orphans, or drop "
        f"'?mode=ro' to repair them"]
    assert MlflowClient(f"sqlite:///{db}").get_run(run_id).info.status == "RUNNING"


def test_a_dry_run_reads_a_store_on_a_read_only_file_system(tmp_path):
    """A store this process cannot write (a read-only mount as root, file modes otherwise): the
    dry run lists its orphans; a run is refused before TensorFlow."""
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    db, run_id = _store_with_an_orphan(folder)
    as_root = os.geteuid() == 0
    if as_root:  # bind the folder onto itself, then make that mount read-only
        if subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root without mount(8) (no CAP_SYS_ADMIN): the ?mode=ro test covers the read path")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
    else:
        db.chmod(0o444)
        folder.chmod(0o555)
    try:
        done = _zoo_runs("--uri", f"sqlite:///{db}", "--dry-run", cwd=tmp_path)
        assert done.returncode == 0 and f"would close {run_id}" in done.stdout, done.stderr
        refused = _zoo_runs("--uri", f"sqlite:///{db}", cwd=tmp_path)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "does not take new files" in refused.stderr or "is not writable" in refused.stderr
    finally:
        if as_root:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db"]


def test_zoo_runs_on_a_server_that_is_not_there_fails_within_the_health_check(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    done = _zoo_runs("--uri", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert time.perf_counter() - start < 150  # a bounded wait (3 s), not MLflow's 248 s of retries, on any load
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"zoo-runs: no MLflow server answers at http://127.0.0.1:{port} within 3 s ([Errno 111] Connection "
        f"refused); start one (zoo-server start --root DIR, or mlflow server --host 127.0.0.1 --port 5000)"]


@pytest.mark.parametrize("content, says", [(b"not a database at all", "is not a SQLite database"),
                                           (b"", "is empty (0 bytes)")])
def test_zoo_runs_on_a_broken_store_says_what_is_wrong(tmp_path, content, says):
    (tmp_path / "mlflow.db").write_bytes(content)
    for dry in ([], ["--dry-run"]):
        done = _zoo_runs(*dry, cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_store_this_process_has_open_is_checked_through_sqlite_only(tmp_path, monkeypatch):
    """SQLite's locks are per process and all dropped when the process closes any descriptor of
    the file: a sweep's check before each job that opened and closed the live database dropped
    the lock of the parent run's MLflow connection, and the other processes writing the store met
    "disk I/O error". Once this process has the store open, the checks read it through SQLite."""
    import builtins
    import os

    from zoo.tracking.store import check_for_run, client

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    touched = []
    real_open, real_os_open = builtins.open, os.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: touched.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(os, "open", lambda f, *a, **k: touched.append(str(f)) or real_os_open(f, *a, **k))
    check_for_run(uri, "gradzoo")  # no store yet: nothing to open
    client(uri).search_experiments()
    touched.clear()
    check_for_run(uri, "gradzoo")
    assert str(db) not in touched, touched
    fresh = tmp_path / "other" / "mlflow.db"  # a store this process has not opened: its file is read
    fresh.parent.mkdir()
    fresh.write_bytes(db.read_bytes())
    check_for_run(f"sqlite:///{fresh}", "gradzoo")
    assert str(fresh) in touched
