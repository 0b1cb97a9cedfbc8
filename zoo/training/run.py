"""One run: build -> train loop -> finish.

The sink always hears how the run ended: the finish runs in a ``finally``, so a crash is
recorded as FAILED with its error, Ctrl-C as KILLED (``zoo.outcome=killed``), and a run whose
loss or gradients became non-finite is a normal FINISHED run tagged ``zoo.outcome=diverged``
with the step it happened at. Evaluation is in inference mode with batch-norm population
statistics recomputed over the training split first (zoo.training.evaluation), so it is right after any
number of steps.
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import zoo.runtime.stopping as stopping
from zoo.data import DATASETS, Dataset, constant_baseline
from zoo.training.evaluation import PopulationStatistics, evaluate
from zoo.models import MODELS
from zoo.records import posedness
from zoo.records.recorder import Recorder
from zoo.instruments.sharpness import SharpnessSeries, series_for
from zoo.instruments.sharpness_record import FOLDER as SHARPNESS_FOLDER, FILE as SHARPNESS_FILE
from zoo.records.stats import RunStats
from zoo.records.summary import describe_progress, description, headline, progress, sharpness_summary, summarize
from zoo.records.verdict import Verdict, judge_run
from zoo.config.optimizers import OPTIMIZERS
from zoo.report import run_report
from zoo.runtime.job import setup_tensorflow
from zoo.config.schema import SpecError
from zoo.training.spec import RunSpec, compose_spec
from zoo.training.step import InstrumentedStep, batch_spec
from zoo.tracking import names, provenance
from zoo.tracking.memory import MemorySink
from zoo.tracking.runs import flat_params
from zoo.tracking.sink import Sink
from zoo.training.pretrain import greedy_layerwise_pretrain

log = logging.getLogger("zoo")


@dataclass
class RunResult:
    run_id: str | None
    outcome: str            # finished | diverged | failed | killed
    verdict: Verdict
    stats: RunStats
    final: dict[str, float]
    train_seconds: float
    model: object = None    # the trained keras.Model (None if the run failed before building it)
    progress: str | None = None  # learning | stalled | unstable | ill-posed (None: no final train loss)
    ill_posed: str | None = None  # why the loss cannot read its targets (zoo.records.posedness)

    @property
    def headline(self) -> str:
        """'vanishing · stalled': the verdict on the gradient flow and whether the net learned."""
        return headline(self.verdict.label, self.progress, self.verdict.event)

    def summary_line(self) -> str:
        """The run's last line: outcome, steps, verdict with its reason, progress with its ratio."""
        line = f"{self.outcome} after {len(self.stats.step)} steps; verdict {self.verdict.label} ({self.verdict.reason})"
        if self.progress:
            line += "; progress " + describe_progress(self.progress, self.final["progress/train_loss_ratio"],
                                                      self.ill_posed)
        return line


@dataclass
class Trainee:
    data: Dataset
    model: object
    step: InstrumentedStep
    population: PopulationStatistics
    sharpness: SharpnessSeries | None = None  # trainer.sharpness_every > 0: λ_max readings


def build(spec: RunSpec) -> Trainee:
    """The run's data, model and instrumented step, exactly as the spec says."""
    setup_tensorflow(spec.seed, spec.trainer.deterministic, spec.trainer.threads)
    data: Dataset = DATASETS.build(spec.data.name, **spec.data.kwargs())
    try:
        spec.model.check_data(data)
    except SpecError as err:
        raise err.within("model") from None
    size_by_building = MODELS.get(spec.model.name).tags.get("size_by_building")  # model=custom: no config-time estimate
    if size_by_building is not None:
        size_by_building(spec.model, data, spec.trainer.batch_size)
    model = MODELS.build(spec.model.name, data.input_shape, data.num_outputs, **spec.model.kwargs())
    optimizer = OPTIMIZERS.build(spec.optimizer.name, **spec.optimizer.kwargs())
    step = InstrumentedStep(model, data.task, optimizer, spec.optimizer.clipping(),
                            batch_spec(data.x_train, data.y_train))
    return Trainee(data, model, step, PopulationStatistics(step.main, spec.trainer.batch_size),
                   series_for(step, data.x_train, data.y_train, spec.trainer, spec.seed))


def train_loop(t: Trainee, recorder: Recorder, spec: RunSpec) -> str:
    """Epochs of instrumented steps; returns 'diverged' at the first non-finite step."""
    data, step = t.data, t.step
    train = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
             .shuffle(len(data.x_train), seed=spec.seed, reshuffle_each_iteration=True)
             .batch(spec.trainer.batch_size).prefetch(2))
    every = spec.monitor.histogram_every
    for epoch in range(1, spec.trainer.epochs + 1):
        for x, y in train:
            stopping.check()  # a Ctrl-C or SIGTERM whose raise was swallowed inside TensorFlow
            if t.sharpness is not None and t.sharpness.due(recorder.steps + 1):  # at the weights before the update
                if read := t.sharpness.read(recorder.steps + 1, x, y):
                    recorder.sink.log_metrics(read, recorder.steps + 1)
            if recorder.steps % every == 0:
                packed, probed = step.train_with_probes(x, y)
                ok = recorder.on_step(packed.numpy(), probed.numpy())
            else:
                ok = recorder.on_step(step.train(x, y).numpy())
            if not ok:
                log.warning("diverged at step %d: non-finite loss or gradient", recorder.steps)
                return "diverged"
        t.population.refresh(data.x_train)
        val_loss, val_metric = evaluate(step, data.x_val, data.y_val)
        recorder.on_epoch_end(val_loss, val_metric)
        log.info("epoch %d/%d  step %d  val_loss %.4f%s", epoch, spec.trainer.epochs, recorder.steps, val_loss,
                 "" if np.isnan(val_metric) else f"  val_accuracy {val_metric:.3f}")
    return "finished"


def final_numbers(t: Trainee, stats: RunStats, verdict: Verdict, outcome: str) -> dict[str, float]:
    """What studies compare: the verdict's numbers, the summary, the baselines, and for a run
    that finished, the whole training split's data loss and accuracy in inference mode."""
    baseline = constant_baseline(t.data)
    final = {f"health/{k}": v for k, v in verdict.numbers.items()}
    final.update(summarize(stats))
    if t.sharpness is not None:
        final.update(sharpness_summary(t.sharpness.record(), stats))
    final.update({f"baseline/{k}": v for k, v in {**t.data.baselines, "train_loss": baseline}.items()})
    if len(stats.val_loss):
        final["final/val_loss"] = float(stats.val_loss[-1])
        if not np.isnan(stats.val_metric[-1]):
            final["final/val_accuracy"] = float(stats.val_metric[-1])
    if outcome == "finished":
        t.population.refresh(t.data.x_train)
        train_loss, train_metric = evaluate(t.step, t.data.x_train, t.data.y_train)
        final["final/train_loss"] = train_loss
        if not np.isnan(train_metric):
            final["final/train_accuracy"] = train_metric
        final["progress/train_loss_ratio"] = progress(train_loss, baseline)[1]
    return final


def run(spec: RunSpec, sink: Sink, run_name: str | None = None) -> RunResult:
    run_name = run_name or f"{spec.model.name}-{spec.data.name}"
    tags = {**provenance.tags(spec.seed), "zoo.model": spec.model.name, "zoo.dataset": spec.data.name,
            "zoo.config_hash": spec.config_hash,
            **{f"zoo.{name}_sha256": digest for name, digest in spec.fingerprints.items()}}
    params = {k: v for k, v in spec.resolved.items() if k != "study"}  # the study is the parent's
    sink.start(run_name, flat_params(params), tags)  # first: a job that cannot build is recorded
    status, outcome, started, recorder, trainee = "FAILED", "failed", time.perf_counter(), None, None
    try:
        trainee = build(spec)
        if trainee.step.skipped:  # a model built elsewhere (model=custom): what is not measured
            sink.set_tags({"zoo.monitor_skipped": "; ".join(f"{k}: {v}" for k, v in trainee.step.skipped.items())[:5000]})
            log.warning("not measured: %s", "; ".join(f"{k} ({v})" for k, v in trainee.step.skipped.items()))
        if spec.pretrain.epochs:
            sink.log_metrics(greedy_layerwise_pretrain(
                trainee.model, trainee.data.x_train, epochs=spec.pretrain.epochs, lr=spec.pretrain.lr,
                batch_size=spec.trainer.batch_size, seed=spec.seed), 0)
        step = trainee.step
        recorder = Recorder(step.meter, sink, spec.monitor.log_every)
        outcome = train_loop(trainee, recorder, spec)
        status = "FINISHED"
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (zoo.runtime.stopping.Terminated): the same path
        status, outcome = "KILLED", "killed"
        if recorder is None:  # stopped before the first step: no verdict, but say how it ended
            sink.set_tags({**killed_tags(stop), "zoo.steps": "0"})
        raise
    except Exception as err:
        stop = stopping.stop_behind(err)  # SIGTERM in graph tracing surfaces as SystemError: a stop
        if stop is not None:
            status, outcome = "KILLED", "killed"
            if recorder is None:
                sink.set_tags({**killed_tags(stop), "zoo.steps": "0"})
            raise stop from err
        sink.set_tags({"zoo.error": f"{type(err).__name__}: {err}"[:5000], "zoo.outcome": "failed"})
        raise
    finally:
        seconds = time.perf_counter() - started
        if recorder is None:  # failed before training: nothing to judge or draw
            sink.finish(status)
        else:
            stats, verdict, final, reason = _finish(sink, spec, trainee, recorder, outcome, status, run_name)
    result = RunResult(sink.run_id, outcome, verdict, stats, final, seconds, trainee.model,
                       progress=_progress_label(final, reason), ill_posed=reason)
    log.info("%s: %s — %.1fs", run_name, result.summary_line(), seconds)
    return result


def train(overrides: list[str] | None = None, sink: Sink | None = None) -> RunResult:
    """Run one training job from config overrides, as ``zoo-train`` would; returns the result.

    Without ``sink`` the run's records stay in memory (no MLflow), which suits notebooks.
    """
    spec = compose_spec(overrides or [])
    return run(spec, sink if sink is not None else MemorySink())


def killed_tags(stop: BaseException | None = None) -> dict[str, str]:
    """How a run a stop ended says so: ``zoo.outcome=killed`` and ``zoo.killed`` = the signal,
    as zoo.tracking.repair.close_owned tags the runs it ends (a sweep's parent)."""
    return {"zoo.outcome": "killed",
            "zoo.killed": stopping.name_of(stop) if stop is not None else (stopping.requested() or "SIGINT")}


def _progress_label(final: dict[str, float], ill_posed: str | None = None) -> str | None:
    if "progress/train_loss_ratio" not in final:
        return None
    return progress(final["final/train_loss"], final["baseline/train_loss"], ill_posed)[0]


def _ill_posed(trainee: Trainee, final: dict[str, float]) -> str | None:
    """Why the run's loss cannot read its training targets, or its final training loss is below
    the loss's floor (zoo.records.posedness); None for a well-posed run or one without a final
    training loss. ``data=arrays`` can bring any targets."""
    if "final/train_loss" not in final:
        return None
    head, data = trainee.step.heads[0], trainee.data
    classes = data.num_outputs if head.loss == "sparse_categorical_crossentropy" else None
    return posedness.ill_posed(head.loss, data.y_train, final["final/train_loss"], classes)


def _finish(sink: Sink, spec: RunSpec, trainee: Trainee, recorder: Recorder, outcome: str, status: str,
            run_name: str):
    """The last partial window, the verdict, final numbers, artifacts and tags (the verdict goes
    in front of the run's name: zoo.tracking.names); then the run ends."""
    try:
        recorder.flush()
        stats = recorder.stats()
        sharpness = trainee.sharpness.record() if trainee.sharpness is not None else None
        verdict = judge_run(stats, sharpness)
        if len(stats.step):  # written first: a stop during the slow parts below keeps it
            sink.set_tags({"zoo.verdict": verdict.label, "zoo.verdict_reason": verdict.reason,
                           "zoo.steps": str(len(stats.step))})
        final = final_numbers(trainee, stats, verdict, outcome) if status == "FINISHED" else {
            f"health/{k}": v for k, v in verdict.numbers.items()}
        tags = {"zoo.outcome": outcome, "zoo.steps": str(len(stats.step))}
        if outcome == "killed":
            tags.update(killed_tags())
        reason = _ill_posed(trainee, final)
        learned = _progress_label(final, reason)
        if learned:
            tags["zoo.progress"] = learned
        if reason:
            tags["zoo.ill_posed"] = reason[:5000]
        if len(stats.step):  # no verdict from zero steps
            tags.update({"zoo.verdict": verdict.label, "zoo.verdict_reason": verdict.reason,
                         "zoo.headline": headline(verdict.label, learned, verdict.event),
                         "mlflow.note.content": description(verdict, learned, final.get("progress/train_loss_ratio"),
                                                            reason),
                         "mlflow.runName": names.judged(run_name, verdict.label)})
        if outcome == "diverged":
            tags["zoo.diverged_step"] = str(int(verdict.numbers["diverged_step"]))
        if sharpness is not None:  # its own file: the raw statistics file is the monitor's
            with tempfile.TemporaryDirectory() as tmp:
                sharpness.save(Path(tmp) / SHARPNESS_FILE)
                sink.log_artifact(Path(tmp) / SHARPNESS_FILE, SHARPNESS_FOLDER)
        run_report.write(sink, spec, stats, verdict, final, tags, model=trainee.model,
                         input_example=trainee.data.x_val)
        stopping.check()  # a stop whose raise was swallowed while writing (a C++ or gc callback's caller)
    except BaseException as err:  # FINISHED only when everything it promises is written
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        if status == "KILLED":  # however far the report got: a KILLED run says how it ended
            try:
                sink.set_tags(killed_tags(err))
            except Exception as tag_error:  # the stop goes on; zoo.cli.train's cleanup tags it too
                log.error("could not tag the killed run: %s", tag_error)
        raise
    finally:
        sink.finish(status)
    return stats, verdict, final, reason
