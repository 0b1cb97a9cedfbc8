"""Two first runs on a store that does not exist yet both succeed (zoo.tracking.store)."""
import shutil
import subprocess
import sys

from mlflow import MlflowClient

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
        outs = [p.communicate(timeout=120) for p in procs]
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
