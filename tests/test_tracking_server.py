"""A study over HTTP: a real MLflow server on 127.0.0.1 over a real PostgreSQL cluster, both
started here (zoo.tracking.server) and stopped at the end; never a mock.

The quick gated_init study (4 jobs) runs as a user runs it, ``zoo-ablate ... tracking=server``,
with ``monitor.log_every=1`` so every step's loss and per-layer gradient norms cross HTTP. As
root, PostgreSQL runs as the ``postgres`` user, which cannot enter pytest's private temp
folders: the server's folder is a world-searchable one in /tmp.
"""
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from types import SimpleNamespace

import pytest

from zoo.cli import server as server_cli
from zoo.instruments.layout import LOG10_ZERO
from zoo.tracking import server as zoo_server
from zoo.tracking.repair import running
from conftest import EVENT_SECONDS

STUDY = ["gated_init", "--scale", "quick", "tracking=server", "monitor.log_every=1"]
QUICK_JOBS = 4
STEPS = 10  # adding T=150: 640 sequences, batches of 64, one epoch
EXPERIMENT = "gradzoo"


pytestmark = pytest.mark.slow  # no PostgreSQL is a failure that says so (postgres_bin), not a skip


def _server_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="gradzoo-server-"))
    root.chmod(0o755)  # the postgres user (when we are root) must be able to enter it
    return root


def _answers(uri: str) -> bool:
    parts = urllib.parse.urlsplit(uri)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def team():
    root = _server_root()
    try:
        with zoo_server.serving(root) as (database, server):
            yield SimpleNamespace(uri=server.uri, database=database, artifacts=server.artifacts)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ablate(uri: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", *STUDY, f"tracking.uri={uri}"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def study(team, tmp_path_factory):
    """The study, run once over HTTP; its working folder (resume runs from the same one)."""
    listing = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", "--list"], capture_output=True,
                             text=True, timeout=EVENT_SECONDS)
    assert re.search(rf"^\s*gated_init\s.*\[{QUICK_JOBS} jobs quick", listing.stdout, re.M), listing.stdout
    cwd = tmp_path_factory.mktemp("study")
    done = _ablate(team.uri, cwd)
    links = re.findall(rf"\(UI: {re.escape(team.uri)}/#/experiments/\d+/runs/\w+\?workflowType=machine_learning\)", done.stdout)
    assert len(links) == QUICK_JOBS, done.stdout[-3000:]  # each job's last line links its run, in the ML view
    return cwd


def _runs(c):
    experiment = c.get_experiment_by_name(EXPERIMENT)
    return experiment, c.search_runs([experiment.experiment_id], max_results=100)


def test_quick_study_logs_every_child_run_and_metric_over_http(team, study, tmp_path):
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=team.uri)
    experiment, runs = _runs(c)
    parents = [r for r in runs if r.data.tags.get("zoo.kind") == "study"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["zoo.study"] == "gated_init"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["zoo.claim_verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert parent.data.tags["zoo.jobs"] == str(QUICK_JOBS)

    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == QUICK_JOBS == len(runs) - 1
    assert all(r.info.run_name.startswith(f"{r.data.tags['zoo.verdict']} · ") for r in children)
    assert {r.info.run_name.split(" · ", 1)[1] for r in children} == {"simple_rnn", "irnn", "lstm",
                                                                      "lstm_chrono"}  # the model=… the sweep varies
    points = 0
    for child in children:
        assert child.info.status == "FINISHED"
        run_id = child.info.run_id
        loss = c.get_metric_history(run_id, "2 learning/loss")
        assert [m.step for m in loss] == list(range(1, STEPS + 1))
        grads = sorted(k for k in child.data.metrics if k.startswith("log10_grad_norm/"))
        assert "log10_grad_norm/rnn1" in grads and "log10_grad_norm/head" in grads
        for key in grads:
            history = c.get_metric_history(run_id, key)
            assert len(history) == STEPS and all(LOG10_ZERO <= m.value < float("inf") for m in history), key  # log10 norms
        points += len(loss) + sum(len(c.get_metric_history(run_id, k)) for k in grads)
        # artifacts go through the server (no shared disk): a proxied URI, files in its folder
        assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri
        stats = c.download_artifacts(run_id, "stats/gradient_stats.npz", str(tmp_path))
        assert Path(stats).stat().st_size > 0
    plots = [a.path for a in c.list_artifacts(parent.info.run_id, "plots")]
    assert "plots/final_metrics.png" in plots and len(plots) >= 2
    summary = Path(c.download_artifacts(parent.info.run_id, "summary/summary.md", str(tmp_path)))
    assert "gated_init" in summary.read_text()
    assert list(team.artifacts.rglob("gradient_stats.npz"))

    # the rows are in PostgreSQL itself
    import psycopg2

    with psycopg2.connect(team.database.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))
        assert cur.fetchone()[0] == QUICK_JOBS + 1
        cur.execute("SELECT count(*) FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
                    "WHERE r.experiment_id = %s AND (m.key = '2 learning/loss' OR m.key LIKE 'log10\\_grad\\_norm/%%')",
                    (int(experiment.experiment_id),))
        assert cur.fetchone()[0] == points
    conn.close()


def test_resume_over_http_skips_every_finished_job(team, study):
    from mlflow import MlflowClient

    done = _ablate(team.uri, study)
    assert done.stdout.count("zoo-train: skipped, already finished") == QUICK_JOBS, done.stdout[-3000:]
    c = MlflowClient(tracking_uri=team.uri)
    _, runs = _runs(c)
    parents = sorted((r for r in runs if r.data.tags.get("zoo.kind") == "study"), key=lambda r: r.info.start_time)
    assert len(parents) == 2 and len(runs) == 2 + QUICK_JOBS  # no job trained again
    latest = parents[-1]
    assert latest.info.status == "FINISHED"
    assert latest.data.tags["zoo.jobs_reused"] == str(QUICK_JOBS)
    assert latest.data.tags["zoo.claim_verdict"] == parents[0].data.tags["zoo.claim_verdict"]
    adopted = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id]
    assert len(adopted) == QUICK_JOBS


def test_team_server_stops_both_and_keeps_history_across_restarts():
    from mlflow import MlflowClient

    root = _server_root()
    database = zoo_server.Postgres(root / "postgres")  # reads the running cluster's postmaster.pid
    try:
        with zoo_server.team_server(root) as uri:
            assert uri.startswith("http://127.0.0.1:") and _answers(uri)
            pid = database.pid
            assert pid and running(pid)
            MlflowClient(tracking_uri=uri).create_experiment("kept")
        assert not _answers(uri), "the MLflow server still answers"
        assert not running(pid), "postgres still runs"
        assert database.pid is None  # postmaster.pid removed: a clean shutdown

        with zoo_server.team_server(root) as uri:  # the same cluster again: the history is there
            assert MlflowClient(tracking_uri=uri).get_experiment_by_name("kept") is not None
            pid = database.pid
        assert not _answers(uri) and not running(pid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_an_impossible_port_is_refused_before_anything_starts(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        server_cli.main(["start", "--root", str(tmp_path / "never"), "--port", "70000"])
    assert stop.value.code == 2
    assert "--port must be a TCP port in 1..65535, got 70000" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def _server_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "zoo.cli.server", "start", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=EVENT_SECONDS)


@pytest.mark.parametrize("args, says", [
    (["--root", ""], "zoo-server: --root must name a folder, got ''"),  # '' was the current folder
    (["--root", "r", "--host", "999.1.1.1"], "zoo-server: --host '999.1.1.1' is not an IP address or a name "
                                             "that resolves ("),
    (["--root", "r", "--host", "192.0.2.1"], "zoo-server: --host 192.0.2.1 is not an address of this machine ("),
])
def test_a_bad_root_or_host_is_refused_as_what_it_is_before_anything_starts(tmp_path, args, says):
    done = _server_cli(*args, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and done.stderr.startswith(says), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_port_in_use_is_reported_as_taken(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        done = _server_cli("--root", "r", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.splitlines() == [
        f"zoo-server: port {port} on 127.0.0.1 is taken (Address already in use): another server runs there; "
        f"choose another --port"]
    assert list(tmp_path.iterdir()) == []
