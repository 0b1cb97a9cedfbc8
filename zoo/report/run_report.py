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

from zoo.instruments.series import HISTOGRAM_IMAGES
from zoo.records.stats import RunStats
from zoo.records.verdict import Verdict
from zoo.report import colors, plots
from zoo.tracking.sink import Sink
from zoo.tracking.store import client

log = logging.getLogger(__name__)
DESCRIBED_KEYS = ("depth", "activation", "init", "norm", "norm_position", "residual", "residual_scale")
MODEL_NAME = "model"           # a logged model's name when the caller gives none
INPUT_EXAMPLE_ROWS = 2
MODEL_OUTCOMES = ("finished", "diverged")
RECENT_RUNS = len(colors.PALETTE) - 1  # a new run's colour differs from this many runs before it


def describe(spec) -> str:
    m = spec.model
    return " ".join(f"{k}={getattr(m, k)}" for k in DESCRIBED_KEYS if hasattr(m, k))


def write(sink: Sink, spec, stats: RunStats, verdict: Verdict, final: dict[str, float],
          tags: dict[str, str], model=None, input_example=None) -> None:
    """Tags (the verdict, its reason, the headline), final metrics, artifacts, the model (with a
    few rows of inputs as its example), and last ``zoo.outcome`` with the model's tags; the caller
    finishes the run. The verdict's tags go first: a run stopped while its plots or model are
    written keeps the verdict it already has. ``zoo.outcome`` goes last: it says the run's
    records are whole (resume reuses only a FINISHED run that has it)."""
    sink.set_tags({k: v for k, v in tags.items() if k != "zoo.outcome"})
    sink.log_metrics(final, int(len(stats.step)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(spec.resolved)))
        sink.log_artifact(tmp / "config.yaml")
    write_records(sink, stats, verdict, f"{spec.model.name} on {spec.data.name}: {describe(spec)}")
    model_tags = {}
    if model is not None and input_example is not None and _log_model_wanted(spec, tags):
        model_tags = log_model(sink, model, input_example, tags, name=model_name(spec))
    sink.set_tags({**run_color(sink), **{k: v for k, v in tags.items() if k == "zoo.outcome"}, **model_tags})


def write_records(sink: Sink, stats: RunStats, verdict: Verdict, title: str) -> None:
    """The raw statistics file (``stats/gradient_stats.npz``), the plots (``plots/``) and the
    histograms over time as an image series (:func:`log_histogram_series`) of any monitored
    run: a zoo run or a user's model under ``zoo.GradientMonitor``. The files are written into
    one folder and logged in one call where the sink can (``log_artifacts``), else one by one."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "stats").mkdir()
        (tmp / "plots").mkdir()
        stats.save(tmp / "stats" / "gradient_stats.npz")
        plots.gradient_flow(stats, tmp / "plots" / "gradient_flow.png", verdict, title)
        plots.gradient_histograms(stats, tmp / "plots" / "gradient_histograms.png", title)
        if len(stats.seq_layers) and len(stats.hist_step):
            plots.gradient_through_time(stats, tmp / "plots" / "gradient_through_time.png", title)
        log_folder(sink, tmp)
    log_histogram_series(sink, stats, title)


def log_folder(sink: Sink, folder: Path) -> None:
    """Every file under ``folder`` as an artifact at its path below it: one ``log_artifacts``
    call where the sink has it, else ``log_artifact`` per file."""
    log_artifacts = getattr(sink, "log_artifacts", None)
    if log_artifacts is not None:
        log_artifacts(folder)
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parent = path.parent.relative_to(folder).as_posix()
        sink.log_artifact(path, None if parent == "." else parent)


def log_histogram_series(sink: Sink, stats: RunStats, title: str) -> int:
    """Every layer's gradient histogram at up to plots.MAX_STEP_IMAGES histogram steps, one
    image per step under the key ``HISTOGRAM_IMAGES``, so MLflow's step slider browses them
    (``sink.log_image_series`` in one upload where the sink has it, else ``sink.log_image``
    per image; a sink with neither gets none). MLflow's image chart opens at step 0 whatever
    steps a series has ("No image logged at this step"), so the first image (step 1, the
    gradient before any update) is logged at step 0 too; its title says its step. Returns the
    number of images logged. The series is a view on records already stored: failing to
    write it costs the run nothing but a warning and the tag ``zoo.histogram_series_error``."""
    log_series, log_image = getattr(sink, "log_image_series", None), getattr(sink, "log_image", None)
    if (log_series is None and log_image is None) or not len(stats.hist_step):
        return 0
    logged = []

    def series():  # drawn as the sink takes them (MLflow's encodes one while the next is drawn)
        for step, image in plots.histogram_step_images(stats, title):
            if not logged and step != 0:
                logged.append(0)
                yield 0, image
            logged.append(step)
            yield step, image

    try:
        if log_series is not None:
            log_series(HISTOGRAM_IMAGES, series())
        else:
            for step, image in series():
                log_image(HISTOGRAM_IMAGES, image, step)
    except Exception as err:  # the run's other records matter more
        log.warning("could not log the histogram images: %s: %s", type(err).__name__, err)
        sink.set_tags({"zoo.histogram_series_error": f"{type(err).__name__}: {err}"[:5000]})
        return 0
    return len(logged)


def run_color(sink: Sink) -> dict[str, str]:
    """``{"mlflow.runColor": colour}`` for a run in an MLflow store: a Tableau 10 colour none of
    the RECENT_RUNS runs started before it in its experiment has (zoo.report.colors), so runs
    made one after another (a tour, a sweep) are told apart in MLflow's charts; ``{}`` for a
    sink without a store, or if the store cannot say (the colour is not worth a failed run)."""
    uri, run_id = getattr(sink, "uri", None), getattr(sink, "run_id", None)
    if not uri or not run_id:
        return {}
    try:
        c = client(uri)
        run = c.get_run(run_id)
        before = c.search_runs([run.info.experiment_id], f"attributes.start_time <= {run.info.start_time}",
                               max_results=RECENT_RUNS + 1, order_by=["attributes.start_time DESC"])
        recent = [r.data.tags.get(colors.RUN_COLOR_TAG) for r in before if r.info.run_id != run_id]
        return {colors.RUN_COLOR_TAG: colors.next_color(recent[:RECENT_RUNS])}
    except Exception as err:
        log.warning("could not choose the run's colour: %s: %s", type(err).__name__, err)
        return {}


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
