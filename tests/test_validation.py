"""Validation hardening: every bad input is refused by the CLI in one line, with exit code 2,
within about two seconds and before TensorFlow is imported."""
import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec
from conftest import EVENT_SECONDS

# Runs ``zoo-train ARGS`` in-process and reports whether TensorFlow got imported on the way.
PROBE = ("import runpy, sys\n"
         "sys.argv = ['zoo-train'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('zoo.cli.train', run_name='__main__')\n    code = 0\n"
         "except SystemExit as e:\n    code = e.code\n"
         "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")


def refuse(args, cwd, budget=None):
    """Run the CLI on ``args``; assert exit 2, one stderr line, TensorFlow never imported (what
    makes a refusal fast: the README's table has the seconds, measured), and, where a wait is
    the fault, that it took under ``budget`` seconds."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True,
                         text=True, timeout=EVENT_SECONDS)
    seconds = time.perf_counter() - start
    assert out.stdout.split()[-2:] == ["TF_NOT_IMPORTED", "2"], (args, out.stdout, out.stderr[-2000:])
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo-train: config error: "), out.stderr[-2000:]
    assert budget is None or seconds < budget, (args, seconds)
    # Hydra makes a run's folder before the job sees its config: a refused config leaves none
    assert not (Path(cwd) / "outputs").exists() and not (Path(cwd) / "multirun").exists(), args
    return lines[0].removeprefix("zoo-train: config error: ")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["seed=-1"], "seed must be an integer in [0, 2**32), got -1"),
    (["seed=4294967296"], "seed must be an integer in [0, 2**32), got 4294967296"),
    (["seed=1.5"], "seed must be an integer in [0, 2**32), got 1.5"),
    (["seed=true"], "seed must be an integer in [0, 2**32), got True"),
    (["optimizer.lr=inf"], "optimizer.lr must be a finite number, got inf"),
    (["optimizer.lr=nan"], "optimizer.lr must be a finite number, got nan"),
    (["optimizer=sgd", "optimizer.momentum=inf"], "optimizer.momentum must be a finite number, got inf"),
    (["optimizer.clipnorm=-inf"], "optimizer.clipnorm must be a finite number, got -inf"),
    (["model.init_std=inf"], "model.init_std must be a finite number, got inf"),
    # values that TensorFlow would change: 0 or inf in float32, or refuse only once it is up
    (["optimizer.lr=1e-320"], "optimizer.lr is 0 in float32, the precision training runs in; the smallest "
                              "positive float32 is 1.4e-45, got 1e-320"),
    (["optimizer.global_clipnorm=1e39"], "optimizer.global_clipnorm must be at most 3.403e+38 in size "
                                         "(float32's largest), got 1e+39"),
    (["model.init_std=1e-46"], "model.init_std is 0 in float32, the precision training runs in; the smallest "
                               "positive float32 is 1.4e-45, got 1e-46"),
    (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum must be in [0, 1] (Keras' SGD), got 1.5"),
    (["trainer.threads=100000"], "trainer.threads must be at most 1024, got 100000"),
    (["model=resnet", "data.layout=image", "model.residual=false", "model.residual_scale=skipinit"],
     "model.residual_scale: skipinit scales residual branches, and model.residual=false has none; use "
     "residual_scale=one or residual=true"),
    (["model=resnet", "data.layout=image", "model.residual_scale=fixup"],
     "model.residual_scale: fixup initializes nets without normalization (Zhang et al. 2019, Sec. 3), and a "
     "batch norm after each conv would undo its scaling; use model.norm=none, or residual_scale=skipinit with a norm"),
    (["optimizer.warmup_steps=-1"], "optimizer.warmup_steps must be >= 0, got -1"),
    (["optimizer.warmup_steps=231"], "optimizer.warmup_steps is longer than the whole run: 231 warm-up steps > "
                                     "230 training steps (trainer.epochs 10 x 23 steps of trainer.batch_size 64 "
                                     "over 1,437 training examples); lower it or raise trainer.epochs"),
    (["model.residual=2"], "model.residual must be true or false, got 2"),
    (["model.residual=yes"], "model.residual must be true or false, got 'yes'"),
    (["trainer.deterministic=0"], "trainer.deterministic must be true or false, got 0"),
    (["+foo=1"], "foo: unknown top-level key; the sections are: seed, model, data, optimizer, "
                 "trainer, monitor, pretrain, tracking, study, hydra"),
    (["tracking.uri=postgresql://db/mlflow"],
     "tracking.uri: unsupported MLflow store 'postgresql://db/mlflow'; use sqlite:///PATH, "
     "http(s)://HOST:PORT, or null"),
    (["tracking.uri=sqlite://"], "tracking.uri: needs a database file, sqlite:///PATH; got 'sqlite://'"),
    (["tracking.experiment=''"], "tracking.experiment must not be empty"),
    (["tracking.uri=''"], "tracking.uri must not be empty; null means no MLflow"),
    (["tracking.experiment=" + "x" * 501], "tracking.experiment must be at most 500 characters, got 501"),
])
def test_bad_input_is_refused_before_tensorflow(tmp_path, args, message):
    assert refuse(args, tmp_path) == message


def test_tracking_store_in_an_unwritable_place_is_refused(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    message = refuse([f"tracking.uri=sqlite:///{tmp_path}/a_file/mlflow.db"], tmp_path)
    assert message == f"tracking.uri: cannot create '{tmp_path}/a_file/mlflow.db': " \
                      f"'{tmp_path}/a_file' is a file, not a folder"


def test_a_store_folder_that_does_not_exist_yet_is_fine(tmp_path):
    spec = compose_spec([f"tracking.uri=sqlite:///{tmp_path}/new/deeper/mlflow.db"])
    assert spec.tracking.uri.endswith("mlflow.db") and not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the writability probe leaves nothing behind


def test_tracking_server_that_is_not_there_is_refused_at_once(tmp_path):
    port = closed_port()
    message = refuse([f"tracking.uri=http://127.0.0.1:{port}"], tmp_path)
    assert message.startswith(f"tracking.uri: no MLflow server answers at http://127.0.0.1:{port} "
                              f"within 3 s (")


def test_tracking_server_that_never_answers_is_refused_after_the_timeout(tmp_path):
    with socket.socket() as listener:  # accepts the connection (kernel backlog), never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        message = refuse([f"tracking.uri=http://127.0.0.1:{port}"], tmp_path, budget=150)  # waits 3 s, not 258 s
    assert "within 3 s (timed out)" in message or "within 3 s (The read operation timed out)" in message, message


@contextlib.contextmanager
def fake_server(answer):
    """An HTTP server on a free local port whose GET of a path answers ``answer(path)``:
    (status, body bytes). Yields its URI."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answer(self.path)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def test_tracking_server_that_answers_health_is_accepted():
    with fake_server(lambda path: (200, b"OK") if path == "/health" else (404, b"")) as uri:
        assert compose_spec([f"tracking.uri={uri}"]).tracking.uri == uri
        with pytest.raises(SpecError, match=r"/nested/health answered HTTP 404: not an MLflow server"):
            compose_spec([f"tracking.uri={uri}/nested"])


def test_experiment_names_with_control_characters_are_refused():
    from zoo.training.spec import TrackingConfig

    with pytest.raises(SpecError, match=r"experiment must not hold control characters, got 'a\\x07b'"):
        TrackingConfig(experiment="a\x07b")


@pytest.mark.parametrize("args, knob", [
    (["model.width=1000000"], "the parameters (261.9 TiB): lower model.width or model.depth"),
    (["model.depth=100000"], "the layers (195.3 GiB): lower model.depth"),
    (["model=lstm", "data=adding", "model.width=200000"], "the parameters"),
    # the batch is capped by the 100,000 training examples, and still dominates
    (["data=synthetic", "data.n_train=100000", "model.width=4096", "trainer.batch_size=1000000000"],
     "(trainer.batch_size 1000000000, capped at the training split), 20 weight layers)"),
    (["data=synthetic", "data.n_train=100000", "model.width=4096", "trainer.batch_size=100000"],
     ": lower trainer.batch_size, or model.width or model.depth"),
    (["data=synthetic", "data.n_train=1000000000"], "the data ("),
])
def test_a_run_too_big_for_this_machine_is_refused_naming_what_dominates(tmp_path, args, knob):
    message = refuse(args, tmp_path)
    assert message.startswith("this run needs about ") and " is available; most of it is the " in message, message
    assert knob in message, message


@pytest.mark.parametrize("batch", [1437, 1438, 10**9, 10**12])
def test_a_batch_larger_than_the_training_split_costs_the_split(batch):
    """digits has 1,437 training examples: a step never holds more (was: 'needs 4.2 TiB')."""
    from zoo import models

    spec = compose_spec([f"trainer.batch_size={batch}", "tracking.uri=null"])
    est = models.estimate("mlp", spec.model, "digits", spec.data)
    assert est.batch(batch) == 1437 and est.bytes(batch) == est.bytes(1437) < 2 * 2**30


def test_memory_estimates_agree_with_counted_parameters():
    """The closed forms count the same weights Keras builds (a second way to the number)."""
    from zoo.config import budget
    from zoo import models
    from zoo.data.digits import DigitsConfig
    from zoo.data.adding import AddingConfig
    from zoo.data.keras_datasets import KerasImageConfig
    from zoo.models.mlp import MLPConfig
    from zoo.models.recurrent import LSTMConfig
    from zoo.models.resnet import ResNetConfig

    mlp = models.estimate("mlp", MLPConfig(depth=3, width=10), "digits", DigitsConfig())
    assert mlp.params == (64 + 1) * 10 + (10 + 1) * 10 + (10 + 1) * 10
    lstm = models.estimate("lstm", LSTMConfig(width=8), "adding", AddingConfig(length=50))
    assert lstm.params == 4 * (2 + 8 + 1) * 8 + (8 + 1) * 1
    # ResNet-20 on 32x32x3, option A shortcuts: 269,722 trainable parameters counted by Keras
    # (README; the paper's 0.27M)
    resnet = models.estimate("resnet", ResNetConfig(), "cifar10", KerasImageConfig())
    assert resnet.params == 269_722
    assert budget.available_bytes() > 0


def test_ordinary_runs_pass_the_memory_check():
    for overrides in ([], ["model=resnet", "data=cifar10", "model.depth=110"],
                      ["model=inception", "data=digits", "data.layout=image", "data.image_size=32"],
                      ["model=lstm", "data=adding", "data.length=150"]):
        compose_spec(overrides + ["tracking.uri=null"])


# --- Hydra's own errors and zoo-ablate's overrides: the same one-line contract --------------------
@pytest.mark.parametrize("args, message", [
    (["model=foo"], "In 'config': Could not find 'model/foo'; Available options in 'model': custom, deep_linear, gru, "),
    (["seed=0,1"], "Ambiguous value for argument 'seed=0,1'; 1. To use it as a list, use key=[value1,value2]; "),
    (["model.depth=[1,2"], "model.depth=[1,2: no viable alternative at input '[1,2'"),
    (["+model=mlp"], "model appears more than once in the final defaults list"),
    (["model.nosuch=1"], "Could not override 'model.nosuch'; To append to your config use +model.nosuch=1; "
                         "Key 'nosuch' is not in struct"),
    (["--config-name", "nosuch"], "Cannot find primary config 'nosuch'"),
    (["--config-dir", "/nonexistent"], "Additional config directory '/nonexistent' not found"),
])
def test_hydras_own_errors_are_one_line_and_exit_2(tmp_path, args, message):
    assert refuse(args, tmp_path).startswith(message)


def test_a_user_asking_for_hydras_full_error_gets_the_exception(tmp_path):
    import os

    out = subprocess.run([sys.executable, "-m", "zoo.cli.train", "model=foo"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=EVENT_SECONDS, env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    assert out.returncode == 1 and "hydra.errors.MissingConfigException" in out.stderr


ABLATE = ("import sys\nfrom zoo.cli.ablate import main\ncode = main(sys.argv[1:])\n"
          "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")


@pytest.mark.parametrize("override, message", [
    ("model.depth=abc", "model.depth: Value 'abc' of type 'str' could not be converted to Integer"),
    ("model.depth=5,abc", "model.depth: Value 'abc' of type 'str' could not be converted to Integer"),
    ("optimizer.lr=inf", "optimizer.lr must be a finite number, got inf"),
    ("model=foo", "In 'config': Could not find 'model/foo'; Available options in 'model': "),
    ("model.depth=[1", "model.depth=[1: no viable alternative at input '[1'"),
])
def test_a_bad_override_to_zoo_ablate_is_refused_before_the_sweep(tmp_path, override, message):
    out = subprocess.run([sys.executable, "-c", ABLATE, "input_scaling", "--scale", "quick", override],
                         cwd=tmp_path, capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert out.stdout.split()[-2:] == ["TF_NOT_IMPORTED", "2"], out.stdout + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"zoo-ablate: config error: {message}"), out.stderr
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "mlflow.db").exists()


# --- every job of a sweep, and every kind of config error, before the first job ------------------
@pytest.mark.parametrize("args, message", [
    (["-m", "model.depth=3,abc", "trainer.epochs=1"],
     "model.depth: Value 'abc' of type 'str' could not be converted to Integer (job 2 of 2: model.depth=abc "
     "trainer.epochs=1)"),
    (["-m", "optimizer.lr=0.1,inf"], "optimizer.lr must be a finite number, got inf (job 2 of 2: optimizer.lr=inf)"),
    (["-m", "seed=0,1,-1", "model.depth=2,3"], "seed must be an integer in [0, 2**32), got -1 (job 5 of 6: "),
    (["-m", "model.activation=relu,sigmod"], "model.activation: unknown activation 'sigmod'; choose one of: "),
    (["-m", "model=mlp,foo"], "In 'config': Could not find 'model/foo'; Available options in 'model': "),
    (["-m", "model.width=8,1000000"], "this run needs about 262.0 TiB of memory"),
])
def test_every_job_of_a_sweep_is_checked_before_the_first_starts(tmp_path, args, message):
    """Before: the bad job was skipped with a log line after the good ones trained, exit 0."""
    assert refuse(args, tmp_path).startswith(message)


@pytest.mark.parametrize("args, message", [
    (["model.depth=${oops}"], "model.depth: does not resolve: Interpolation key 'oops' not found"),
    (["optimizer.lr=${model.nosuch}"], "optimizer.lr: does not resolve: Interpolation key 'model.nosuch' not found"),
    (["model.width=${oc.env:ZOO_NO_SUCH_VARIABLE}"],
     "model.width: does not resolve: KeyError raised while resolving interpolation: \"Environment variable "
     "'ZOO_NO_SUCH_VARIABLE' not found\""),
    (["-m", "model.depth=2,${oops}"], "model.depth: does not resolve: Interpolation key 'oops' not found (job 2 of 2"),
])
def test_an_interpolation_that_does_not_resolve_is_one_line(tmp_path, args, message):
    assert refuse(args, tmp_path).startswith(message)


BROKEN_YAML = "model:\n  depth: [10\n  width: 8\n"


@pytest.mark.parametrize("where, args", [
    ("study", ["-m", "--config-name", "broken"]),       # a study run through zoo-train -m --config-dir
    ("study", ["--config-name", "broken"]),             # the same file as one run
    ("group", ["-m", "model=broken", "seed=0,1"]),      # a config group file of the config dir
    ("group", ["model=broken"]),
])
def test_a_yaml_error_names_its_file_and_line(tmp_path, where, args):
    """Before: 'the launcher stopped the sweep: ParserError … resumes' (exit 1), or a traceback."""
    from zoo.studies.load import studies_dir

    conf = tmp_path / "conf"
    if where == "study":
        conf.mkdir()
        (conf / "broken.yaml").write_text((studies_dir() / "input_scaling.yaml").read_text()
                                          .replace("  depth: 10\n", "  depth: [10\n"))
        line = 9  # where the parser stopped; the bracket opened on line 8, which the message also names
    else:
        (conf / "model").mkdir(parents=True)
        (conf / "model" / "broken.yaml").write_text("defaults: [mlp, _self_]\n" + BROKEN_YAML.replace("model:\n  ", ""))
        line = 3
    message = refuse(["--config-dir", str(conf), *args], tmp_path)
    broken = conf / ("broken.yaml" if where == "study" else "model/broken.yaml")
    assert message.startswith(f"{broken}:{line}: YAML syntax error: expected ',' or ']', but got ':'"), message


@pytest.mark.parametrize("overrides, metric, why", [
    (["model.activation=relu"], "saturated_fraction/block01_act", "a sigmoid or tanh activation layer"),
    (["model.activation=selu"], "saturated_fraction/block01_act", "a sigmoid or tanh activation layer"),
    (["model.activation=linear"], "saturated_fraction/block01_act", "a sigmoid or tanh activation layer"),
])
def test_an_override_that_makes_a_claims_metric_impossible_is_refused(tmp_path, overrides, metric, why):
    """``input_scaling`` compares saturated fractions, which only sigmoid and tanh layers have:
    before, noticed after the sweep ("inconclusive: no data"); now before it, in zoo-ablate and in
    zoo-train -m on the study file alike."""
    from zoo.studies.load import studies_dir

    message = f"study.claim: claim check 0: {metric} is logged only by runs with {why}, and the "
    out = subprocess.run([sys.executable, "-c", ABLATE, "input_scaling", "--scale", "quick", *overrides],
                         cwd=tmp_path, capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert out.stdout.split()[-2:] == ["TF_NOT_IMPORTED", "2"], out.stdout + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "mlflow.db").exists()
    assert message in refuse(["-m", "--config-dir", str(studies_dir()), "--config-name", "input_scaling",
                              "+study.scale=quick", "seed=0", *overrides], tmp_path)


@pytest.mark.parametrize("metric, params, impossible", [
    ("saturated_fraction/block01_act", {"model.name": "mlp", "model.activation": "tanh"}, False),
    ("saturated_fraction/rnn1", {"model.name": "simple_rnn", "model.activation": "relu"}, True),
    ("saturated_fraction/x", {"model.name": "lstm"}, True),             # no activation layers of its own
    ("saturated_fraction/x", {"model.name": "custom", "model.activation": "relu"}, False),  # cannot tell
    ("dead_fraction/block01_act", {"model.name": "mlp", "model.activation": "tanh"}, True),
    ("dead_fraction/block01_act", {"model.name": "resnet", "model.activation": "relu"}, False),
    ("summary/time_grad_ratio_init", {"model.name": "mlp", "model.activation": "relu"}, True),
    ("time_grad_ratio/rnn1", {"model.name": "gru"}, False),
    ("summary/forget_gate_end", {"model.name": "gru"}, True),
    ("forget_gate/rnn1", {"model.name": "lstm"}, False),
    ("pretrain/recon_loss/block01", {"model.name": "mlp", "pretrain.epochs": "0"}, True),
    ("pretrain/recon_loss/block01", {"model.name": "mlp", "pretrain.epochs": "20"}, False),
    ("final/val_loss", {"model.name": "mlp"}, False),
])
def test_which_runs_can_log_a_metric(metric, params, impossible):
    from zoo.studies.load import StudyConfig
    from zoo.studies.validate import check_metrics

    check = {"metric": metric, "variant": {"seed": "0"}, "op": ">", "value": 0.5}
    study = StudyConfig("s", "d", ["seed"], ["final/val_loss"], {"text": "t", "checks": [check]})  # a study has a metric
    runs = [{**params, "seed": "0"}, {**params, "seed": "1"}]
    if impossible:
        with pytest.raises(SpecError, match=rf"claim check 0: {metric} is logged only by runs with .* the 1 run\(s\)"):
            check_metrics(study, runs, "s.yaml")
    else:
        check_metrics(study, runs, "s.yaml")
    check_metrics(study, [{**params, "seed": "5"}], "s.yaml")  # no run of the side: left to the other checks


# --- the tracking store, checked before TensorFlow (zoo.tracking.store) --------------------------
RETIRED = ("MLflow 3 retired file stores (file:PATH, plain paths); use sqlite:///PATH/mlflow.db "
           "(mlflow migrate-filestore converts an existing one)")


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory):
    """A whole MLflow store made by the zoo (WAL, at this MLflow's schema), with an experiment
    'gone' deleted; tests copy it (making one costs ~1.5 s)."""
    from zoo.tracking.store import client

    db = tmp_path_factory.mktemp("made") / "mlflow.db"
    c = client(f"sqlite:///{db}")
    c.delete_experiment(c.create_experiment("gone"))
    return db


def _copy(db, folder, name="mlflow.db"):
    import sqlite3

    target = folder / name
    with sqlite3.connect(db) as source, sqlite3.connect(target) as copy:  # the WAL's pages too
        source.backup(copy)
    return target


def _store_as(kind: str, store, folder):
    """``folder/mlflow.db`` made broken in the way ``kind`` names."""
    import sqlite3

    db = folder / "mlflow.db"
    if kind == "random bytes":
        db.write_bytes(bytes(range(256)) * 64)
    elif kind == "text":
        db.write_text("runs:\n  - name: not a database\n")
    elif kind == "empty":
        db.write_bytes(b"")
    elif kind == "truncated":
        db.write_bytes(_copy(store, folder, "whole.db").read_bytes()[:200_000])
    elif kind == "not MLflow's":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE notes (text)")
    elif kind == "half-migrated":  # an interrupted creation (of the code before), at revision 2 of ~70
        _copy(store, folder)
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
    elif kind == "no schema version":  # the code before, killed between its first tables and alembic's
        _copy(store, folder)
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM alembic_version")
    elif kind == "damaged":  # a whole header, a page of the runs table overwritten
        _copy(store, folder)
        with sqlite3.connect(db) as conn:
            page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        with open(db, "r+b") as handle:
            handle.seek((page - 1) * size)
            handle.write(b"\xff" * 64)
    return db


@pytest.mark.parametrize("kind, says", [
    ("random bytes", "is not a SQLite database (it starts with b'\\x00\\x01"),
    ("text", "is not a SQLite database (it starts with b'runs:\\n  - name: ')"),
    ("empty", "is empty (0 bytes), not an MLflow store; move it aside (mv mlflow.db mlflow.db.bad)"),
    ("truncated", "is truncated (200000 bytes; its header says "),
    ("not MLflow's", "is a SQLite database but not an MLflow store (its tables: notes); move it aside"),
    ("half-migrated", "holds MLflow schema 451aebb31d03, not this MLflow's "),
    ("no schema version", "has MLflow's tables but no schema version: a creation that was interrupted; "
                          "move it aside"),
    ("damaged", "is damaged (sqlite quick_check: "),
])
def test_a_store_file_that_is_not_a_whole_mlflow_store_is_refused(tmp_path, mlflow_store, kind, says):
    _store_as(kind, mlflow_store, tmp_path)
    message = refuse(["tracking.uri=sqlite:///mlflow.db"], tmp_path)
    assert message.startswith("tracking.uri: 'mlflow.db' ") and says in message, message


def test_a_whole_store_and_its_live_experiments_pass(tmp_path, mlflow_store):
    _copy(mlflow_store, tmp_path)
    compose_spec([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", "tracking.experiment=Default"])


def test_a_deleted_experiment_is_refused_with_how_to_restore_it(tmp_path, mlflow_store):
    _copy(mlflow_store, tmp_path)
    message = refuse(["tracking.uri=sqlite:///mlflow.db", "tracking.experiment=gone"], tmp_path)
    assert message == ("tracking.experiment: experiment 'gone' (id 1) is deleted in sqlite:///mlflow.db; restore it "
                       "(MLFLOW_TRACKING_URI=sqlite:///mlflow.db mlflow experiments restore --experiment-id 1) "
                       "or choose another tracking.experiment")


@pytest.mark.parametrize("uri, message", [
    ("sqlite:////proc/x.db", "tracking.uri: cannot create '/proc/x.db': folder '/proc' does not take new files"),
    ("sqlite:////sys/x.db", "tracking.uri: cannot create '/sys/x.db': folder '/sys' does not take new files"),
    ('"sqlite:///mlflow.db?mode=ro"', "tracking.uri: 'sqlite:///mlflow.db?mode=ro': the query string '?mode=ro' "
                                      "asks for a read-only store, and a run writes its records"),
    ('"sqlite:///mlflow.db?timeout=5"', "tracking.uri: 'sqlite:///mlflow.db?timeout=5': the query string "
                                        "'?timeout=5' is not honoured"),
    ("file:./mlruns", f"tracking.uri: 'file:./mlruns': {RETIRED}"),
    ("mlruns", f"tracking.uri: 'mlruns': {RETIRED}"),
])
def test_a_store_uri_a_run_cannot_write_is_refused(tmp_path, uri, message):
    """os.access says root may write /proc and /sys; a probe file says otherwise. A query string
    was ignored by MLflow (the run written anyway, '?mode=ro' and all); MLflow 3 refuses file
    stores unless MLFLOW_ALLOW_FILE_STORE is set."""
    assert refuse([f"tracking.uri={uri}"], tmp_path).startswith(message)
    assert not list(tmp_path.glob("mlflow*"))  # no 'mlflow.db?mode=ro', no lock file


def test_a_lock_path_that_is_a_folder_is_refused(tmp_path, mlflow_store):
    _copy(mlflow_store, tmp_path)
    (tmp_path / "mlflow.db.lock").mkdir()
    assert refuse(["tracking.uri=sqlite:///mlflow.db"], tmp_path) == (
        f"tracking.uri: '{tmp_path}/mlflow.db.lock' is a folder, not the store's lock file; remove it (rmdir)")


def test_a_store_on_a_nearly_full_disk_is_refused(tmp_path, monkeypatch):
    import shutil

    from zoo.tracking import store

    free = shutil.disk_usage(tmp_path)._replace(free=store.MIN_FREE_BYTES - 2**20)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda path: free)
    with pytest.raises(SpecError, match=rf"tracking.uri: cannot create '{tmp_path}/mlflow.db': only 49.0 MiB "
                                        rf"free on the disk of '{tmp_path}' \(a run needs 50 MiB\)"):
        compose_spec([f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])


def test_a_store_on_a_real_full_disk_is_refused(tmp_path):
    """A 1 MiB tmpfs (root can mount one; elsewhere the test above covers the check)."""
    import os

    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tmp_path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount(8) for a tmpfs; the monkeypatched test covers the check")
    try:
        message = refuse(["tracking.uri=sqlite:///mlflow.db"], tmp_path)
        assert message == (f"tracking.uri: cannot create 'mlflow.db': only 1.0 MiB free on the disk of '.' "
                           f"(a run needs 50 MiB); free some space or choose another tracking.uri")
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)


def test_a_deleted_experiment_on_a_server_is_refused(tmp_path):
    import json

    deleted = json.dumps({"experiment": {"experiment_id": "7", "name": "gone", "lifecycle_stage": "deleted"}})

    def answer(path):
        if path == "/health":
            return 200, b"OK"
        return (200, deleted.encode()) if "experiment_name=gone" in path else (404, b"")

    with fake_server(answer) as uri:
        assert refuse([f"tracking.uri={uri}", "tracking.experiment=gone"], tmp_path) == (
            f"tracking.experiment: experiment 'gone' (id 7) is deleted in {uri}; restore it "
            f"(MLFLOW_TRACKING_URI={uri} mlflow experiments restore --experiment-id 7) or choose another "
            f"tracking.experiment")
        compose_spec([f"tracking.uri={uri}", "tracking.experiment=new"])  # 404: made on first use


def test_a_sweeps_jobs_inspect_their_store_once_before_the_first_job(tmp_path, monkeypatch):
    """zoo.cli.precheck validates every job; the jobs share their store, which is inspected once
    (a probe file, the free space, sqlite's quick_check), not once per job."""
    from zoo.training import spec as spec_module
    from zoo.cli.precheck import check_command

    monkeypatch.chdir(tmp_path)
    seen = []
    real = spec_module.check_tracking
    monkeypatch.setattr(spec_module, "check_tracking", lambda config, *a, **k: seen.append(config.uri) or real(config, *a, **k))
    checked = check_command(["-m", "model.depth=2,3,4", "trainer.epochs=1", "tracking.uri=sqlite:///a.db"])
    assert len(checked.specs) == 3 and seen == ["sqlite:///a.db"]
    seen.clear()
    check_command(["-m", "tracking.uri=sqlite:///a.db,sqlite:///b.db"])  # two stores: each once
    assert sorted(seen) == ["sqlite:///a.db", "sqlite:///b.db"]
