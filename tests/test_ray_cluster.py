"""The README's Ray cluster commands against a real two-node Ray 2.60 cluster (issue 22).

Started here on 127.0.0.1 as a user starts one, each from its own folder and with its own temp
dir: a head (``ray start --head``, 2 CPUs) and a second raylet (``ray start --address``, 1 CPU),
token authentication on as Ray 2.60 turns it on (the head has a token; the second node sets
``RAY_AUTH_MODE=token``), each node's environment naming a *dead* MLflow server in
MLFLOW_TRACKING_URI (a node's own, or its loopback). An MLflow server (over sqlite: what this
test is about is the scheduler and what travels with a job; PostgreSQL behind the server is
test_tracking_server's) takes the runs. The study is launched from a third folder exactly as
the README says, ``zoo-ablate STUDY --launcher ray --address HEAD:PORT tracking=server`` with
MLFLOW_TRACKING_URI exported and no RAY_AUTH_MODE, plus SPREAD so each node gets a job. The
store then says where each job ran, with which tracking URI, and that nothing is RUNNING or
FINISHED without an outcome; the job folders are under the launching folder. Everything started
is stopped, and no process of either node's session is left.
"""
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from zoo.tracking.server import MlflowServer, free_port

pytestmark = pytest.mark.slow

STUDY = "input_scaling"  # 2 jobs at quick scale
RAY = str(Path(sys.executable).with_name("ray")) if Path(sys.executable).with_name("ray").exists() else "ray"
DEAD = {"head": "http://127.0.0.1:9", "node": "http://localhost:9"}  # nothing answers there
CLEAN = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "MLFLOW_TRACKING_URI")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _session(leader: int) -> list[int]:
    """Processes of the session ``leader`` started (Ray's daemons and workers stay in it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == leader:  # after the name: state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def _wait_started(proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "ray start took too long\n" + log.read_text(errors="replace")[-3000:]
        time.sleep(0.5)


def _stop(nodes: list) -> list[int]:
    """SIGTERM each ``ray start --block`` (it stops its node's processes), then SIGKILL whatever
    is left in their sessions; the pids that were still there after SIGTERM."""
    for proc in nodes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in nodes:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 20
    left = [pid for proc in nodes for pid in _session(proc.pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = [pid for proc in nodes for pid in _session(proc.pid)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for proc in nodes:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return left


def _nodes(address: str, env: dict) -> dict[str, float]:
    """The alive nodes' ids and CPUs, as a driver with the token sees them."""
    code = ("import sys, ray\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
            "for n in ray.nodes():\n    print(n['NodeID'], n['Alive'], n['Resources'].get('CPU', 0))\n")
    out = subprocess.run([sys.executable, "-c", code, address], env={**env, "RAY_AUTH_MODE": "token"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return {nid: float(cpu) for nid, alive, cpu in (line.split() for line in out.stdout.splitlines()
                                                     if line.count(" ") == 2) if alive == "True"}


@pytest.fixture(scope="module")
def cluster():
    """A head (2 CPUs) and a second raylet (1 CPU) on 127.0.0.1, token auth on, each started in
    a folder of its own; an MLflow server. Stopped at the end, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="zoo-ray-", dir="/tmp"))  # short: Ray's unix sockets live under it
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes, server, started = [], None, time.monotonic()
    ray_env = _env(RAY_AUTH_TOKEN_PATH=str(token))
    common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", "100000000", "--disable-usage-stats", "--block"]
    try:
        server = MlflowServer(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", log=root / "mlflow.log").start()
        for name, args in (
                # the head: RAY_AUTH_MODE unset, a token on the machine: Ray 2.60 turns token auth on
                ("head", ["--head", "--port", str(port), "--num-cpus", "2", "--temp-dir", str(root / "t-head"),
                          "--include-dashboard", "false",
                          "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port())]),
                # another node: joining with an address, it needs RAY_AUTH_MODE=token (README)
                ("node", ["--address", address, "--num-cpus", "1", "--temp-dir", str(root / "t-node")])):
            cwd = root / f"cwd-{name}"  # where `ray start` ran: not where the study is launched
            cwd.mkdir()
            env = {**ray_env, "MLFLOW_TRACKING_URI": DEAD[name],
                   **({"RAY_AUTH_MODE": "token"} if name == "node" else {})}
            log = root / f"{name}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen([RAY, "start", *args, "--dashboard-agent-listen-port", str(free_port()),
                                         *common], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            nodes.append(proc)
            _wait_started(proc, log)
        head_log = (root / "head.log").read_text(errors="replace")
        assert "Token authentication is enabled" in head_log, head_log[-2000:]
        deadline = time.monotonic() + 60
        while len(found := _nodes(address, ray_env)) < 2:
            assert time.monotonic() < deadline, found
            time.sleep(1)
        yield SimpleNamespace(root=root, address=address, token=token, server=server, nodes=found,
                              startup=time.monotonic() - started, head_cwd=root / "cwd-head",
                              node_cwd=root / "cwd-node", leaders=[p.pid for p in nodes])
    finally:
        left = _stop(nodes)
        if server is not None:
            server.stop()
        print(f"\nray cluster: {len(left)} process(es) outlived SIGTERM to `ray start --block`")
        remaining = [pid for proc in nodes for pid in _session(proc.pid)] + _mentioning(str(root))
        shutil.rmtree(root, ignore_errors=True)
        assert not remaining, f"processes of the test's Ray cluster still run: {remaining}"


def _mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (the cluster's temp dirs)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def _launch(cwd: Path, address: str, env: dict, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli.ablate", STUDY, "--scale", "quick", "--launcher", "ray",
                           "--address", address, "tracking=server", *extra], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def study(cluster, tmp_path_factory):
    """The README's command, from a folder of its own; (folder, result, seconds)."""
    cwd = tmp_path_factory.mktemp("launch")
    uri = f"http://localhost:{cluster.server.port}"  # the launcher's string: the nodes' are dead ones
    env = _env(MLFLOW_TRACKING_URI=uri, RAY_AUTH_TOKEN_PATH=str(cluster.token))  # no RAY_AUTH_MODE
    started = time.monotonic()
    done = _launch(cwd, cluster.address, env, "+hydra.launcher.ray.remote.scheduling_strategy=SPREAD")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    print(f"\nray cluster up in {cluster.startup:.1f} s; study over it in {seconds:.1f} s")
    return SimpleNamespace(cwd=cwd, done=done, uri=uri, seconds=seconds, env=env)


def test_the_readme_command_runs_on_both_nodes_and_records_where(cluster, study):
    from mlflow import MlflowClient

    assert "RAY_AUTH_MODE=token (this machine has a Ray token" in study.done.stdout
    c = MlflowClient(tracking_uri=cluster.server.uri)
    runs = c.search_runs([c.get_experiment_by_name("gradzoo").experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("zoo.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [r.info.status for r in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 == len(runs) - 1
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert parent.data.tags["zoo.jobs"] == "2" and parent.data.tags["zoo.jobs_failed"] == "0"
    assert parent.data.tags["zoo.claim_verdict"] in ("reproduced", "not reproduced", "inconclusive")
    launcher_pid = parent.data.tags["zoo.owner.pid"]
    for child in children:
        tags = child.data.tags
        assert child.info.status == "FINISHED" and tags.get("zoo.outcome") in ("finished", "diverged"), tags
        # the URI the launching side resolved, not a node's MLFLOW_TRACKING_URI
        assert child.data.params["tracking.uri"] == study.uri
        assert tags["zoo.launcher"] == "ray" and tags["zoo.owner.pid"] != launcher_pid
    # SPREAD: one job on each node, each job naming its node
    assert {r.data.tags["zoo.ray.node_id"] for r in children} == set(cluster.nodes)
    assert sorted(cluster.nodes.values()) == [1.0, 2.0]

    # job folders under the launching folder (the sweep's, absolute), none where `ray start` ran
    sweep_dir = Path(parent.data.tags["zoo.sweep_dir"])
    assert sweep_dir.is_relative_to(study.cwd) and parent.data.tags["zoo.sweep_key"] == str(sweep_dir)
    jobs = sorted(p.parent for p in sweep_dir.glob("*/.hydra"))
    assert [p.name for p in jobs] == ["0", "1"]
    assert all(list(p.glob("*.log")) for p in jobs)
    for where in (cluster.head_cwd, cluster.node_cwd):
        assert not list(where.rglob(".hydra")) and not (where / "mlflow.db").exists(), list(where.rglob("*"))[:20]


def test_a_second_call_reuses_every_job_on_the_cluster(cluster, study):
    from mlflow import MlflowClient

    started = time.monotonic()
    done = _launch(study.cwd, cluster.address, study.env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]
    print(f"\nsecond call (both jobs reused) in {time.monotonic() - started:.1f} s")
    c = MlflowClient(tracking_uri=cluster.server.uri)
    runs = c.search_runs([c.get_experiment_by_name("gradzoo").experiment_id], max_results=100)
    parents = sorted((r for r in runs if r.data.tags.get("zoo.kind") == "study"), key=lambda r: r.info.start_time)
    assert len(parents) == 2 and len(runs) == 4  # no job trained again
    assert parents[-1].info.status == "FINISHED" and parents[-1].data.tags["zoo.jobs_reused"] == "2"
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_refused_token_is_one_line_and_exit_2_within_seconds(cluster, tmp_path):
    for env, says in (
            (_env(RAY_AUTH_TOKEN="not-the-cluster-token"), "this machine's token (RAY_AUTH_TOKEN, "),
            (_env(HOME=str(tmp_path)), "copy the head's token (`ray get-auth-token` on the head) to "
                                       "~/.ray/auth_token or RAY_AUTH_TOKEN here, and set RAY_AUTH_MODE=token")):
        started = time.monotonic()
        done = _launch(tmp_path, cluster.address, {**env, "MLFLOW_TRACKING_URI": cluster.server.uri}, timeout=120)
        seconds = time.monotonic() - started
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
        line = [x for x in done.stderr.splitlines() if x.startswith("zoo-ablate:")]
        assert len(line) == 1 and "uses token authentication and refused this machine" in line[0], done.stderr
        assert says in line[0] and "Traceback" not in done.stderr
        print(f"refused in {seconds:.1f} s")  # asked of the head first: Ray's own driver retries 20 s
        assert not (tmp_path / "multirun").exists()
