"""One run: spec -> data + model -> instrumented steps -> sink -> verdict, plots, raw file.

The sink always hears how the run ended: ``finish`` runs in a ``finally``, so a crash is
recorded as FAILED with its error, Ctrl-C as KILLED, and a run whose loss or gradients became
non-finite is a normal FINISHED run tagged ``zoo.outcome=diverged`` with the step it happened at.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from zoo.data import DATASETS, Dataset
from zoo.models import MODELS
from zoo.monitor.recorder import Recorder
from zoo.monitor.stats import RunStats
from zoo.monitor.summary import summarize
from zoo.monitor.verdict import Verdict, judge_run
from zoo.optimizers import OPTIMIZERS
from zoo.report import plots
from zoo.spec import RunSpec
from zoo.step import InstrumentedStep, batch_spec
from zoo.tracking import provenance
from zoo.tracking.runs import config_hash
from zoo.tracking.sink import Sink

log = logging.getLogger("zoo")
EVAL_BATCH = 1024


@dataclass
class RunResult:
    run_id: str | None
    outcome: str            # finished | diverged
    verdict: Verdict
    stats: RunStats
    final: dict[str, float]
    train_seconds: float


def setup_tensorflow(seed: int, deterministic: bool, threads: int = 0) -> None:
    """Fresh Keras state, seeds, determinism and thread pools for one job. A sweep's worker
    process (joblib's loky reuses them) runs many jobs: the session is cleared so names and
    graphs do not carry over, and the pools are sized once, before TensorFlow's first op."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)  # Python, NumPy and TF generators
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if threads:
        threading = tf.config.threading
        if threading.get_intra_op_parallelism_threads() != threads:
            try:
                threading.set_intra_op_parallelism_threads(threads)
                threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:  # the runtime already started in this process: keep its pools
                log.warning("TensorFlow already initialized; trainer.threads=%d not applied", threads)


def flat_params(resolved: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in resolved.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = "null" if value is None else str(value)
    return out


def build(spec: RunSpec):
    """The run's data, model and instrumented step, exactly as the spec says."""
    setup_tensorflow(spec.seed, spec.trainer.deterministic, spec.trainer.threads)
    data: Dataset = DATASETS.build(spec.data.name, **spec.data.kwargs())
    model = MODELS.build(spec.model.name, data.input_shape, data.num_outputs, **spec.model.kwargs())
    optimizer = OPTIMIZERS.build(spec.optimizer.name, **spec.optimizer.kwargs())
    step = InstrumentedStep(model, data.task, optimizer, spec.optimizer.clipping(),
                            batch_spec(data.x_train, data.y_train))
    return data, model, step


def train_loop(step: InstrumentedStep, recorder: Recorder, data: Dataset, spec: RunSpec) -> str:
    """Epochs of instrumented steps; returns 'diverged' at the first non-finite step."""
    train = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
             .shuffle(len(data.x_train), seed=spec.seed, reshuffle_each_iteration=True)
             .batch(spec.trainer.batch_size).prefetch(2))
    val = tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val)).batch(EVAL_BATCH)
    every = spec.monitor.histogram_every
    for epoch in range(1, spec.trainer.epochs + 1):
        for x, y in train:
            if recorder.steps % every == 0:
                packed, hist, act, time, gates = step.train_with_histograms(x, y)
                ok = recorder.on_step(packed.numpy(), hist.numpy(), act.numpy(), time.numpy(), gates.numpy())
            else:
                ok = recorder.on_step(step.train(x, y).numpy())
            if not ok:
                log.warning("diverged at step %d: non-finite loss or gradient", recorder.steps)
                return "diverged"
        val_loss, val_metric = evaluate(step, val)
        logged = recorder.on_epoch_end(val_loss, val_metric)
        log.info("epoch %d/%d  step %d  val_loss %.4f%s", epoch, spec.trainer.epochs,
                 recorder.steps, val_loss,
                 f"  val_accuracy {logged['val_accuracy']:.3f}" if "val_accuracy" in logged else "")
    return "finished"


def evaluate(step: InstrumentedStep, val) -> tuple[float, float]:
    total, loss_sum, metric_sum = 0, 0.0, 0.0
    for x, y in val:
        loss, metric = step.evaluate(x, y)
        n = int(x.shape[0])
        total, loss_sum, metric_sum = total + n, loss_sum + float(loss) * n, metric_sum + float(metric) * n
    return loss_sum / total, metric_sum / total


def run(spec: RunSpec, sink: Sink, run_name: str | None = None) -> RunResult:
    run_name = run_name or f"{spec.model.name}-{spec.data.name}"
    tags = {**provenance.tags(spec.seed), "zoo.model": spec.model.name, "zoo.dataset": spec.data.name,
            "zoo.config_hash": config_hash(spec.resolved)}
    params = {k: v for k, v in spec.resolved.items() if k != "study"}  # the study is the parent's
    sink.start(run_name, flat_params(params), tags)  # first: a job that cannot even build is recorded
    status, outcome, started, recorder = "FAILED", "failed", time.perf_counter(), None
    try:
        data, model, step = build(spec)
        if spec.pretrain.epochs:
            from zoo.pretrain import greedy_layerwise_pretrain

            sink.log_metrics(greedy_layerwise_pretrain(
                model, data.x_train, epochs=spec.pretrain.epochs, lr=spec.pretrain.lr,
                batch_size=spec.trainer.batch_size, seed=spec.seed), 0)
        recorder = Recorder(step.layout, step.activation_kinds, sink, spec.monitor.log_every,
                            clipping=spec.optimizer.clipping() is not None,
                            seq_layers=[l.name for l in step.seq_layers],
                            gate_layers=[step.seq_layers[i].name for i in step.gate_layers])
        outcome = train_loop(step, recorder, data, spec)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as err:
        sink.set_tags({"zoo.error": f"{type(err).__name__}: {err}"[:5000], "zoo.outcome": "failed"})
        raise
    finally:
        seconds = time.perf_counter() - started
        if recorder is None:  # failed before training: nothing to judge or draw
            sink.finish(status)
        else:
            stats = recorder.stats()
            verdict = judge_run(stats)
            final = _finish(sink, spec, data, stats, verdict, outcome, status, run_name)
    log.info("%s: %s, verdict %s (%s) — %.1fs", run_name, outcome, verdict.label, verdict.reason, seconds)
    return RunResult(sink.run_id, outcome, verdict, stats, final, seconds)


def _finish(sink: Sink, spec, data, stats, verdict, outcome, status, run_name) -> dict[str, float]:
    """Artifacts, verdict tags and the final flush; runs however training ended."""
    final = {f"health/{k}": v for k, v in verdict.numbers.items()}
    final.update(summarize(stats))
    final.update({f"baseline/{k}": v for k, v in data.baselines.items()})
    if len(stats.val_loss):
        final["final/val_loss"] = float(stats.val_loss[-1])
        if not np.isnan(stats.val_metric[-1]):
            final["final/val_accuracy"] = float(stats.val_metric[-1])
    try:
        sink.log_metrics(final, int(len(stats.step)))
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(spec.resolved)))
            sink.log_artifact(tmp / "config.yaml")
            stats.save(tmp / "gradient_stats.npz")
            sink.log_artifact(tmp / "gradient_stats.npz", "stats")
            title = f"{spec.model.name} on {spec.data.name}: {_describe(spec)}"
            plots.gradient_flow(stats, tmp / "gradient_flow.png", verdict, title)
            plots.gradient_histograms(stats, tmp / "gradient_histograms.png", title)
            sink.log_artifact(tmp / "gradient_flow.png", "plots")
            sink.log_artifact(tmp / "gradient_histograms.png", "plots")
            if len(stats.seq_layers) and len(stats.hist_step):
                plots.gradient_through_time(stats, tmp / "gradient_through_time.png", title)
                sink.log_artifact(tmp / "gradient_through_time.png", "plots")
        tags = {"zoo.verdict": verdict.label, "zoo.verdict_reason": verdict.reason,
                "zoo.outcome": outcome, "zoo.steps": str(len(stats.step))}
        if outcome == "diverged":
            tags["zoo.diverged_step"] = str(int(verdict.numbers["diverged_step"]))
        sink.set_tags(tags)
    finally:
        sink.finish(status)
    return final


def _describe(spec: RunSpec) -> str:
    m = spec.model
    keys = ("depth", "activation", "init", "norm", "residual")
    return " ".join(f"{k}={getattr(m, k)}" for k in keys if hasattr(m, k))
