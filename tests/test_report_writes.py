"""A run's records are written in few calls (issue 33, the end of a monitored run): the
artifacts of one folder in one ``log_artifacts``, the histogram image series in one upload, and
what lands in the store is what one-by-one logging would have left there."""
import re

import numpy as np
from mlflow import MlflowClient
from PIL import Image

from test_plots import make_stats, vanishing_run
from zoo.instruments.histograms import HIST_BINS
from zoo.instruments.series import HISTOGRAM_IMAGES
from zoo.records.verdict import judge_run
from zoo.report import run_report
from zoo.tracking.memory import MemorySink
from zoo.tracking.mlflow_sink import MlflowSink

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def names_of(paths, key):
    """{(step, kind)} of the image files of series ``key`` in MLflow's naming, and whether every
    file of that series follows it."""
    pattern = re.compile(rf"images/{re.escape(key)}\+step\+(\d+)\+timestamp\+\d+\+{UUID}(\.png|\+compressed\.webp)")
    mine = [p for p in paths if p.startswith(f"images/{key}+")]
    matches = [pattern.fullmatch(p) for p in mine]
    return {(int(m.group(1)), m.group(2)) for m in matches if m}, all(matches) and bool(mine)


def test_an_image_series_in_one_upload_leaves_what_log_image_leaves(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink(uri, "series")
    sink.start("run", {}, {})
    rng = np.random.default_rng(0)
    images = [(step, rng.integers(0, 256, (48, 36, 3), dtype=np.uint8)) for step in (0, 1, 11)]
    sink.log_image("by/one", images[0][1], 0)  # MLflow's own log_image, for its naming
    sink.log_image_series("in/one", images)
    sink.finish("FINISHED")
    client = MlflowClient(uri)
    run_id = sink.run_id
    paths = [a.path for a in client.list_artifacts(run_id, "images")]
    theirs, theirs_named = names_of(paths, "by~one")
    ours, ours_named = names_of(paths, "in~one")
    assert theirs_named and theirs == {(0, ".png"), (0, "+compressed.webp")}  # the pattern is MLflow's
    assert ours_named and ours == {(s, kind) for s, _ in images for kind in (".png", "+compressed.webp")}
    assert client.get_run(run_id).data.tags["mlflow.loggedImages"].lower() == "true"
    for step, image in images:  # the full image is the array, pixel for pixel; the thumbnail MLflow's size
        png = next(p for p in paths if p.startswith(f"images/in~one+step+{step}+") and p.endswith(".png"))
        assert np.array_equal(np.asarray(Image.open(client.download_artifacts(run_id, png, str(tmp_path)))), image)
    sizes = {Image.open(client.download_artifacts(run_id, p, str(tmp_path))).size for p in paths if p.endswith(".webp")}
    assert len(sizes) == 1  # the same image size gives the same thumbnail size, ours and MLflow's


class OneByOne:
    """A user's sink with only the required calls and log_image: no batched writes."""

    def __init__(self):
        self.memory = MemorySink()
        self.log_artifact, self.log_image = self.memory.log_artifact, self.memory.log_image
        self.set_tags, self.log_metrics = self.memory.set_tags, self.memory.log_metrics


def test_the_records_are_the_same_written_in_one_call_or_one_by_one(tmp_path):
    counts = np.zeros((3, 4, HIST_BINS), int)
    counts[:, :, 40:44] = np.arange(1, 5)
    stats = make_stats(vanishing_run(30), hist_step=[1, 11, 21], counts=counts)
    verdict = judge_run(stats)
    batched, single = MemorySink(), OneByOne()
    run_report.write_records(batched, stats, verdict, "t")
    run_report.write_records(single, stats, verdict, "t")
    assert set(batched.artifacts) == set(single.memory.artifacts) == {
        "stats/gradient_stats.npz", "plots/gradient_flow.png", "plots/gradient_histograms.png"}
    assert batched.artifacts["stats/gradient_stats.npz"] == single.memory.artifacts["stats/gradient_stats.npz"]
    ours, theirs = batched.images[HISTOGRAM_IMAGES], single.memory.images[HISTOGRAM_IMAGES]
    assert [s for s, _ in ours] == [s for s, _ in theirs] == [0, 1, 11, 21]  # step 1's image at step 0 too
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ours, theirs))


def test_a_failing_image_upload_costs_the_run_a_tag_only(tmp_path):
    counts = np.zeros((2, 4, HIST_BINS), int)
    counts[:, :, 40] = 1
    stats = make_stats(vanishing_run(20), hist_step=[1, 11], counts=counts)
    sink = MemorySink()

    def broken(key, images):
        raise OSError("disk full")

    sink.log_image_series = broken
    run_report.write_records(sink, stats, judge_run(stats), "t")
    assert "plots/gradient_flow.png" in sink.artifacts
    assert sink.tags["zoo.histogram_series_error"] == "OSError: disk full"
