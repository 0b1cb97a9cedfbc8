"""The sink interface: what training emits, whoever stores it.

Training calls ``start`` once, then ``log_metrics`` many times (it must return at once: the
MLflow sink only enqueues), ``log_artifact``/``log_model``/``log_image``/``set_tags`` at the end, and
``finish`` exactly once, which must not return before every record is stored.
"""
from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    run_id: str | None

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, local_path: str, artifact_path: str | None = None) -> None: ...

    def log_model(self, model, name: str, input_example, tags: dict[str, str] | None = None) -> str | None:
        """Store the trained keras.Model with an input example (a few rows of inputs); returns
        a URI it can be loaded from (``models:/<id>`` for MLflow), or None."""

    def log_image(self, key: str, image, step: int) -> None:
        """An image (an RGB array) of the series ``key`` at ``step`` (MLflow: a chart with a
        step slider)."""

    # optional, for batched writes (zoo.report.run_report falls back to the calls above):
    # log_artifacts(local_dir, artifact_path=None): every file under local_dir, folders kept;
    # log_image_series(key, [(step, image), ...]): log_image for each, in one upload

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def finish(self, status: str) -> None:
        """status: FINISHED | FAILED | KILLED (MLflow's run statuses)."""
