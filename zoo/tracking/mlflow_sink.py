"""The MLflow sink: records are queued by the training thread and written in batches by another.

Why our own writer thread rather than MLflow's ``synchronous=False``: measured on this machine,
MLflow's async queue wrote 300 small batches 4x slower than the same points sent synchronously
in batches of 1,000 (it does not merge small batches). A sqlite ``log_batch`` costs ~7-10 ms
per call plus ~0.1 ms per point, so the writer waits and packs: it writes when FLUSH_POINTS are
pending or FLUSH_SECONDS have passed since the oldest unwritten record, in calls of at most
1,000 metrics (MLflow's limit). ``finish`` blocks until the queue is empty, so a run that stops
early or diverges loses nothing.
"""
from __future__ import annotations

import logging
import queue
import re
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from zoo.tracking.repair import OWNER_HOST, OWNER_PID, owner_tags, record_end
from zoo.tracking.runs import experiment_id
from zoo.tracking.store import client

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000   # MLflow's limit for one log_batch call
MAX_PARAMS_PER_BATCH = 100
FLUSH_POINTS = 500
FLUSH_SECONDS = 1.0
_STOP = object()


class MlflowSink:
    def __init__(self, uri: str, experiment: str, parent_run_id: str | None = None):
        self.uri, self.experiment, self.parent_run_id = uri, experiment, parent_run_id
        self.run_id: str | None = None
        self.prefix = ""        # put before every metric name (a run shared with other writers)
        self._owns_run = True   # finish() ends the run only if this sink started it
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self.points_written = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, run_name, params, tags):
        from mlflow.entities import Param


        self._client = client(self.uri)
        if self.parent_run_id:  # a sweep's job: nest under the sweep's parent run
            tags = {**tags, "mlflow.parentRunId": self.parent_run_id}
        run = self._client.create_run(experiment_id(self._client, self.experiment, self.uri),
                                      run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])
        self._writer = threading.Thread(target=self._write_loop, name="zoo-mlflow-writer", daemon=True)
        self._writer.start()

    @classmethod
    def attached(cls, uri: str, run_id: str, prefix: str = "") -> "MlflowSink":
        """A sink writing into an existing run it does not own (a user's active run, one that
        ``mlflow.keras.autolog()`` started): no ``start``; ``finish`` writes everything pending
        and leaves the run's status to its owner. ``prefix`` goes before every metric name."""

        sink = cls(uri, "")
        sink.run_id, sink.prefix, sink._owns_run = run_id, prefix, False
        sink._client = client(uri)
        if OWNER_PID not in sink._client.get_run(run_id).data.tags:
            # so that zoo-runs repair can end it if this process dies with the run open (no
            # heartbeat: nothing refreshes it here, so only the pid on this host decides)
            owner = owner_tags()
            for key in (OWNER_HOST, OWNER_PID):
                sink._client.set_tag(run_id, key, owner[key])
        sink._writer = threading.Thread(target=sink._write_loop, name="zoo-mlflow-writer", daemon=True)
        sink._writer.start()
        return sink

    def has_description(self) -> bool:
        """Does the run already have a description (``mlflow.note.content``)?"""
        return bool(self._client.get_run(self.run_id).data.tags.get("mlflow.note.content"))

    def finish(self, status):
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
        if self._error is not None:
            log.error("some metrics could not be written to MLflow: %s", self._error)
        if self._owns_run:
            self._client.set_terminated(self.run_id, status=status)
            record_end(self.run_id, status)  # a stop's message counts the job's own run too

    # -- records ---------------------------------------------------------------------------
    def log_metrics(self, metrics, step):
        self._queue.put((int(time.time() * 1000), step, metrics))

    def log_artifact(self, local_path, artifact_path=None):
        self._client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_model(self, model, name, input_example, tags=None):
        """Log ``model`` with MLflow's Keras flavour as one of this run's logged models (MLflow 3:
        a LoggedModel linked to the run, listed under the run's *Logged models* and the
        experiment's *Models*), named ``name``, with a signature inferred from ``input_example``
        and the main head's output on it.

        This is what ``mlflow.keras.log_model`` does (it calls ``Model.log(flavor=mlflow.keras)``),
        minus the fluent *active run*: the zoo never starts one (a sweep's in-process jobs and a
        stray ``MLFLOW_RUN_ID`` must not capture each other), so the run is named by id and the
        store by a scoped tracking URI. The LoggedModel is created here, in the run's experiment:
        MLflow 3.17's ``Model.log`` creates it in the active run's experiment, else the fluent
        current one (``mlflow.set_experiment``, ``MLFLOW_EXPERIMENT_ID``/``_NAME``), else the
        Default experiment "0", and never looks at the ``run_id`` it is given
        (``mlflow.tracking.fluent._create_logged_model``). Its params are the run's, as
        ``Model.log`` would copy them. Requirements are given, not inferred: inference loads the
        model again in a subprocess (seconds per run). Loading it back needs the zoo's layers
        registered: ``import zoo.models._layers`` before ``mlflow.keras.load_model``."""
        import keras
        import mlflow
        from mlflow.models import Model, infer_signature

        output = model(input_example, training=False)
        main = output[0] if isinstance(output, (list, tuple)) else output
        signature = infer_signature(input_example, main.numpy() if hasattr(main, "numpy") else main)
        run = self._client.get_run(self.run_id)
        logged = self._client.create_logged_model(
            run.info.experiment_id, name=logged_model_name(name), source_run_id=self.run_id,
            tags={k: str(v) for k, v in (tags or {}).items()} or None, params=dict(run.data.params))
        chatty = keras.config.is_interactive_logging_enabled()
        keras.config.disable_interactive_logging()  # MLflow's check of the example calls predict
        try:
            with _scoped_tracking_uri(self.uri):
                info = Model.log(None, _KerasFlavor, model=model, run_id=self.run_id,
                                 model_id=logged.model_id, flavor_name="mlflow.keras",
                                 signature=signature, input_example=input_example,
                                 pip_requirements=mlflow.keras.get_default_pip_requirements())
        finally:
            if chatty:
                keras.config.enable_interactive_logging()
        return info.model_uri

    def set_tags(self, tags):
        from mlflow.entities import RunTag

        self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    # -- writer thread ---------------------------------------------------------------------
    def _write_loop(self):
        from mlflow.entities import Metric

        done = False
        while not done:
            item, batch = self._queue.get(), []
            deadline = time.monotonic() + FLUSH_SECONDS
            while True:  # gather until enough points, the deadline, or the stop signal
                if item is _STOP:
                    done = True
                    break
                timestamp, step, metrics = item
                batch.extend(Metric(self.prefix + k, float(v), timestamp, step) for k, v in metrics.items())
                if len(batch) >= FLUSH_POINTS:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
                self._send(batch[i:i + MAX_METRICS_PER_BATCH])

    def _send(self, metrics, attempts: int = 5):
        for attempt in range(attempts):
            try:
                self._client.log_batch(self.run_id, metrics=metrics)
                self.points_written += len(metrics)
                return
            except Exception as err:  # e.g. "database is locked" under concurrent jobs
                last = err
                time.sleep(0.2 * 2 ** attempt)
        self._error = last
        log.error("dropped %d metric points after %d attempts", len(metrics), attempts)

    def log_artifacts(self, local_dir, artifact_path=None):
        """Every file under ``local_dir`` (its folders kept), in one call."""
        self._client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_image(self, key, image, step):
        """An image (RGB array) of the series ``key`` at ``step``: MLflow 3 shows a series as
        one chart with a step slider (run page, *Model metrics*) and stores it under ``images/``."""
        self._client.log_image(self.run_id, image, key=self.prefix + key, step=int(step), synchronous=True)

    def log_image_series(self, key, images):
        """Images (RGB arrays) of the series ``key``, ``[(step, image), ...]`` or a generator of
        them, as ``log_image`` logs each, in one upload: ``MlflowClient.log_image`` writes a PNG
        and a thumbnail and sets a tag per image (three store calls each); here the same files,
        named as it names them, go up in one ``log_artifacts`` and the tag once. The files are
        encoded by a second thread while the next image is drawn (PIL encodes without the GIL),
        the PNGs at zlib level 1 (the same pixels, ~5 % larger, half the time). The file names
        are MLflow's (``mlflow.tracking.client.MlflowClient.log_image``, 3.x):
        tests/test_report_writes.py checks them against its own."""
        from mlflow.tracking.multimedia import compress_image_size
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES
        from PIL import Image

        name = re.sub("/", "~", self.prefix + key)  # as MLflow: no subfolders

        def encode(stem, image):
            pil = Image.fromarray(image)
            pil.save(f"{stem}.png", compress_level=1)
            compress_image_size(pil).save(f"{stem}+compressed.webp")

        with tempfile.TemporaryDirectory() as tmp:
            with ThreadPoolExecutor(1, thread_name_prefix="zoo-image-encoder") as encoder:
                done = [encoder.submit(encode, f"{tmp}/{name}+step+{int(step)}+timestamp+{int(time.time() * 1000)}"
                                       f"+{uuid.uuid4()}", image) for step, image in images]
            for future in done:
                future.result()  # an encoding error is the caller's
            self._client.log_artifacts(self.run_id, tmp, "images")
        self._client.set_tag(self.run_id, MLFLOW_LOGGED_IMAGES, True)


class _KerasFlavor:
    """``mlflow.keras`` with the model folder made first: MLflow 3.17's Keras ``save_model``
    writes the input example into ``path`` before it creates ``path`` (FileNotFoundError for
    every ``log_model(..., input_example=...)``)."""

    @staticmethod
    def save_model(path, **kwargs):
        import os

        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        return mlflow.keras.save_model(model=kwargs.pop("model"), path=path, **kwargs)


def logged_model_name(name: str) -> str:
    """``name`` as MLflow accepts a LoggedModel's name: without ``/ : . % " '`` (each becomes
    ``_``), at most 250 characters, never empty."""
    cleaned = "".join("_" if c in "/:.%\"'" else c for c in str(name)).strip()[:250]
    return cleaned or "model"


def _scoped_tracking_uri(uri: str):
    """MLflow's fluent model logging reads the process-wide tracking URI: set it for the call
    and put the previous one back."""
    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # pragma: no cover - older or newer MLflow without the helper
        import contextlib

        import mlflow

        @contextlib.contextmanager
        def _use_tracking_uri(u):
            before = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(u)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(before)
    return _use_tracking_uri(uri)
