"""What a finished run leaves behind: final numbers, the config, the raw statistics file, its
plots, the trained model and its tags, logged through the sink whatever way training ended.

The model is logged (``tracking.log_model``, default on) for a run that finished or diverged (a
diverged model's NaN weights are worth inspecting too; it is tagged so), never for one that
failed or was killed mid-step. Logging it must not cost the run its other records: an error is
logged as a warning and the tag ``zoo.model_error``, and the run goes on to finish.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from zoo.monitor.stats import RunStats
from zoo.monitor.verdict import Verdict
from zoo.report import plots
from zoo.tracking.sink import Sink

log = logging.getLogger(__name__)
DESCRIBED_KEYS = ("depth", "activation", "init", "norm", "residual")
MODEL_NAME = "model"           # a logged model's name when the caller gives none
INPUT_EXAMPLE_ROWS = 2
MODEL_OUTCOMES = ("finished", "diverged")


def describe(spec) -> str:
    m = spec.model
    return " ".join(f"{k}={getattr(m, k)}" for k in DESCRIBED_KEYS if hasattr(m, k))


def write(sink: Sink, spec, stats: RunStats, verdict: Verdict, final: dict[str, float],
          tags: dict[str, str], model=None, input_example=None) -> None:
    """Final metrics, artifacts, the model (with a few rows of inputs as its example) and tags;
    the caller finishes the run."""
    sink.log_metrics(final, int(len(stats.step)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(spec.resolved)))
        sink.log_artifact(tmp / "config.yaml")
    write_records(sink, stats, verdict, f"{spec.model.name} on {spec.data.name}: {describe(spec)}")
    if model is not None and input_example is not None and _log_model_wanted(spec, tags):
        tags = {**tags, **log_model(sink, model, input_example, tags, name=model_name(spec))}
    sink.set_tags(tags)


def write_records(sink: Sink, stats: RunStats, verdict: Verdict, title: str) -> None:
    """The raw statistics file (``stats/gradient_stats.npz``) and the plots (``plots/``) of any
    monitored run: a zoo run or a user's model under ``zoo.GradientMonitor``."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stats.save(tmp / "gradient_stats.npz")
        sink.log_artifact(tmp / "gradient_stats.npz", "stats")
        drawn = [("gradient_flow.png", lambda p: plots.gradient_flow(stats, p, verdict, title)),
                 ("gradient_histograms.png", lambda p: plots.gradient_histograms(stats, p, title))]
        if len(stats.seq_layers) and len(stats.hist_step):
            drawn.append(("gradient_through_time.png", lambda p: plots.gradient_through_time(stats, p, title)))
        for name, draw in drawn:
            draw(tmp / name)
            sink.log_artifact(tmp / name, "plots")


def _log_model_wanted(spec, tags: dict[str, str]) -> bool:
    return bool(getattr(spec.tracking, "log_model", True)) and tags.get("zoo.outcome") in MODEL_OUTCOMES


def model_name(spec) -> str:
    """The logged model's name, ``<model family>-<dataset>`` (``mlp-digits``): what the
    experiment's *Models* tab lists beside the run that trained it."""
    return f"{spec.model.name}-{spec.data.name}"


def log_model(sink: Sink, model, input_example, tags: dict[str, str], name: str = MODEL_NAME) -> dict[str, str]:
    """Log the model through the sink as ``name``; returns tags saying where it went, how long
    it took, or why it could not be logged."""
    started = time.perf_counter()
    example = input_example[:INPUT_EXAMPLE_ROWS]
    model_tags = {k: tags[k] for k in ("zoo.outcome", "zoo.verdict") if k in tags}
    try:
        uri = sink.log_model(model, name, example, model_tags)
    except Exception as err:  # the run's other records matter more than its model
        log.warning("could not log the model: %s: %s", type(err).__name__, err)
        return {"zoo.model_error": f"{type(err).__name__}: {err}"[:5000]}
    seconds = time.perf_counter() - started
    log.info("logged the model in %.1fs: %s", seconds, uri)
    return {"zoo.model_uri": str(uri), "zoo.model_log_seconds": f"{seconds:.2f}"}
