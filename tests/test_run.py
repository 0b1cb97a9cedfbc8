"""Whole runs: CLI into MLflow, divergence, verdicts of the textbook cases, determinism."""
import getpass
import signal

import numpy as np
import pytest
from mlflow import MlflowClient

import zoo
from conftest import run_cli, swallowed_signal
from zoo.instruments.layout import LOG10_ZERO
from zoo.records.stats import RunStats
from zoo.report.colors import PALETTE
from zoo.tracking.memory import MemorySink

FAST = ["trainer.epochs=2", "model.depth=6"]


def only_run(uri):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("gradzoo").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_cli_run_lands_in_mlflow_with_params_series_plots_and_verdict(tmp_path, sqlite_uri):
    out = run_cli(*FAST, "monitor.log_every=5", f"tracking.uri={sqlite_uri}",
                  f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    client, run = only_run(sqlite_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "6" and run.data.params["optimizer.name"] == "adam"
    assert run.data.tags["zoo.verdict"] == "healthy"  # 6 ReLU/He layers
    # the UI's *Created by* and *Source*, as MLflow's own start_run records them
    assert run.data.tags["mlflow.user"] == getpass.getuser() and run.data.tags["mlflow.source.type"] == "LOCAL"
    assert run.data.tags["mlflow.source.name"] == "train.py"  # `python -m zoo.cli.train`; `zoo-train` for the script
    assert run.data.tags["zoo.progress"] == "learning"
    assert run.data.metrics["final/train_loss"] < 0.95 * run.data.metrics["baseline/train_loss"]
    assert 0 < run.data.metrics["final/train_accuracy"] <= 1
    assert run.data.tags["zoo.outcome"] == "finished" and run.data.tags["zoo.seed"] == "0"
    assert run.data.tags["zoo.version.tensorflow"] and run.data.tags["zoo.git_commit"]
    steps = int(run.data.tags["zoo.steps"])
    assert steps == 2 * int(np.ceil(1437 / 64))  # digits: 1437 training images, batch 64
    layers = [f"block0{i}_dense" for i in range(1, 6)] + ["head"]
    for layer in layers:
        history = client.get_metric_history(run.info.run_id, f"log10_grad_norm/{layer}")
        # every 5 steps, and the last partial window (steps 46 = 45 + 1) too
        assert [m.step for m in history] == [*range(5, steps + 1, 5), steps], layer
        assert all(LOG10_ZERO < m.value < 3 for m in history)  # log10 of a norm: nonzero, not huge
    assert len(client.get_metric_history(run.info.run_id, "2 learning/val_loss")) == 2
    assert "2 learning/val_accuracy" in run.data.metrics and "2 learning/loss" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for d in ("plots", "stats") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config.yaml", "plots/gradient_flow.png", "plots/gradient_histograms.png",
            "stats/gradient_stats.npz"} <= artifacts
    stats = RunStats.load(client.download_artifacts(run.info.run_id, "stats/gradient_stats.npz", str(tmp_path)))
    assert stats.grad_norm.shape == (steps, 6) and list(stats.layers) == layers
    assert list(stats.hist_step) == list(range(1, steps + 1, 10))
    # the histograms as an image series MLflow's step slider browses: one image per histogram step
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    shown = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images
                   if p.startswith("images/1 gradient flow~histograms+step+") and p.endswith(".png"))
    assert shown == [0, *stats.hist_step]  # MLflow's slider opens at 0: the first image is there too
    assert run.data.tags["mlflow.loggedImages"].lower() == "true"
    assert run.data.tags["mlflow.runColor"] == PALETTE[0]  # the experiment's first run


def test_forced_divergence_is_recorded_not_crashed(tmp_path, sqlite_uri):
    out = run_cli(*FAST, "optimizer=sgd", "optimizer.lr=1e8", f"tracking.uri={sqlite_uri}",
                  f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "diverged" in out.stdout
    client, run = only_run(sqlite_uri)
    tags = run.data.tags
    assert run.info.status == "FINISHED"
    assert tags["zoo.outcome"] == "diverged" and tags["zoo.verdict"] == "diverged"
    step = int(tags["zoo.diverged_step"])
    assert step == int(tags["zoo.steps"]) < 46  # stopped at the first non-finite step
    loss = client.get_metric_history(run.info.run_id, "2 learning/loss")
    assert loss[-1].step == step  # the step that diverged is flushed too
    assert "plots/gradient_flow.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


@pytest.mark.parametrize("activation, init, expected", [
    ("sigmoid", "random_normal", "vanishing"),
    ("relu", "he_normal", "healthy"),
])
def test_textbook_cases_get_their_verdicts(activation, init, expected):
    result = zoo.train(["trainer.epochs=2", "model.depth=20", f"model.activation={activation}",
                        f"model.init={init}"])
    assert result.verdict.label == expected, result.verdict


def test_same_seed_same_losses_other_seed_other_losses():
    def losses(seed):
        sink = MemorySink()
        result = zoo.train(["trainer.epochs=2", "model.depth=4", f"seed={seed}", "data=synthetic",
                            "data.n_train=512", "model.norm=batch", "monitor.log_every=4"], sink=sink)
        return result.stats.loss, sink
    first, sink = losses(7)
    second, _ = losses(7)
    third, _ = losses(8)
    assert len(first) == 16
    np.testing.assert_array_equal(first, second)  # bit for bit, every step
    assert not np.array_equal(first, third)
    assert [v for _, v in sink.metrics["2 learning/loss"]] == [float(np.mean(first[i:i + 4])) for i in range(0, 16, 4)]
    assert sink.status == "FINISHED" and sink.tags["zoo.verdict"]
    assert {"plots/gradient_flow.png", "stats/gradient_stats.npz", "config.yaml"} <= set(sink.artifacts)
    series = sink.images["1 gradient flow/histograms"]  # the image series, as MLflow's would be: steps 0, 1, 11
    assert [step for step, _ in series] == [0, 1, 11]
    assert all(image.dtype == np.uint8 and image.shape[2] == 3 for _, image in series)
    assert "mlflow.runColor" not in sink.tags  # no store, no colour


def test_mlflow_sink_flushes_everything_on_finish(sqlite_uri):
    from zoo.tracking.mlflow_sink import MlflowSink

    sink = MlflowSink(sqlite_uri, "sink-test")
    sink.start("flush", {"a": "1"}, {"t": "x"})
    for step in range(1, 301):  # 300 steps x 25 series, enqueued as fast as possible
        sink.log_metrics({f"grad_norm/l{i:02d}": step + i for i in range(25)}, step)
    sink.finish("FINISHED")
    client = MlflowClient(tracking_uri=sqlite_uri)
    for i in (0, 24):
        history = client.get_metric_history(sink.run_id, f"grad_norm/l{i:02d}")
        assert sorted(m.step for m in history) == list(range(1, 301))
    assert client.get_run(sink.run_id).info.status == "FINISHED"
    assert sink.points_written == 300 * 25


@pytest.mark.parametrize("overrides,verdict,learned,event,name", [
    (["model.depth=20", "model.activation=sigmoid", "model.init=random_normal", "trainer.epochs=1"],
     "vanishing", "stalled", None,  # the README tour's sigmoid net: predicts the label frequencies
     "vanishing · sigmoid · depth=20 · random_normal · epochs=1"),
    # the windows' flow reads healthy (0/0 once every ReLU is dead); training makes it worse than
    # a constant, and from step 9 on no kernel gets any gradient: the event says so
    (["model.depth=3", "model.width=16", "optimizer=sgd", "optimizer.lr=20", "optimizer.global_clipnorm=1",
      "trainer.epochs=1"], "healthy", "unstable", "gradient collapse at step 9",
     "healthy · sgd · depth=3 · width=16 · global_clipnorm=1 · lr=20 · epochs=1"),
])
def test_the_last_line_the_run_name_and_description_say_flow_and_learning(tmp_path, sqlite_uri, overrides,
                                                                            verdict, learned, event, name):
    out = run_cli(*overrides, f"tracking.uri={sqlite_uri}", "tracking.log_model=false",
                  f"hydra.run.dir={tmp_path / 'hydra'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert f"; verdict {verdict} (" in last and f"; progress {learned} (final train loss " in last, last
    _, run = only_run(sqlite_uri)
    ratio = run.data.metrics["progress/train_loss_ratio"]
    assert (0.95 <= ratio <= 1 / 0.95) if learned == "stalled" else ratio > 1 / 0.95
    assert f"{ratio:.2f}× the best constant predictor's" in last
    tags = run.data.tags
    headline = " · ".join(p for p in (verdict, learned, event) if p)
    assert tags["zoo.headline"] == headline and tags["zoo.progress"] == learned
    assert tags["mlflow.note.content"].startswith(f"**{headline}**")
    assert ("- first event: " + event in tags["mlflow.note.content"]) if event else "first event" not in tags["mlflow.note.content"]
    assert tags["zoo.verdict_reason"] in tags["mlflow.note.content"]
    assert run.info.run_name == name  # the runs table shows ~20 characters: the verdict, then what differs


@pytest.mark.parametrize("fault, status", [(KeyboardInterrupt, "KILLED"), (OSError, "FAILED"), ("swallowed", "KILLED")])
def test_a_run_stopped_while_writing_its_report_is_not_finished(monkeypatch, fault, status):
    """Ctrl-C, SIGTERM or a full disk after the loop ended but before the report, model and
    tags are written: the run is not FINISHED (so resume does not skip it); a stop's run says
    it was killed and by what, a failed write's run has no outcome. ``swallowed``: a SIGTERM
    whose raise a callback dropped while the report was written (zoo.runtime.stopping's handler
    installed, as zoo-train does) is a stop all the same."""
    from zoo.report import run_report
    from zoo.runtime import stopping

    write, swallowed = run_report.write, fault == "swallowed"

    def stop(*args, **kwargs):
        if swallowed:
            write(*args, **kwargs)
            return swallowed_signal(signal.SIGTERM)
        raise fault("while writing the report")

    monkeypatch.setattr(run_report, "write", stop)
    sink, handler = MemorySink(), signal.getsignal(signal.SIGTERM)
    if swallowed:
        signal.signal(signal.SIGTERM, stopping._on_sigterm)
    try:
        with pytest.raises(stopping.Terminated if swallowed else fault):
            zoo.train(["trainer.epochs=1", "model.depth=2", "model.width=8", "data=synthetic",
                       "data.n_train=64", "data.n_val=32"], sink=sink)
    finally:
        signal.signal(signal.SIGTERM, handler)
        stopping.reset()
    assert sink.status == status
    if status == "KILLED":
        assert sink.tags["zoo.outcome"] == "killed"
        assert sink.tags["zoo.killed"] == ("SIGTERM" if swallowed else "SIGINT")
    else:
        assert "zoo.outcome" not in sink.tags
    assert sink.metrics["2 learning/loss"]  # what it logged is kept


def test_resume_skips_only_runs_that_recorded_their_outcome(sqlite_uri):
    from mlflow import MlflowClient

    from zoo.tracking.runs import experiment_id, find_finished

    client = MlflowClient(sqlite_uri)
    exp = experiment_id(client, "gradzoo", sqlite_uri)
    cut_short = client.create_run(exp, tags={"zoo.config_hash": "abc"}).info.run_id
    client.set_terminated(cut_short, "FINISHED")  # as a run stopped while writing its report was
    assert find_finished(sqlite_uri, "gradzoo", "abc") is None
    done = client.create_run(exp, tags={"zoo.config_hash": "abc", "zoo.outcome": "finished"}).info.run_id
    client.set_terminated(done, "FINISHED")
    assert find_finished(sqlite_uri, "gradzoo", "abc") == done
