"""A sink that keeps every record in memory: tests, notebooks, and runs with tracking.uri=null."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path


class MemorySink:
    def __init__(self):
        self.run_id: str | None = None
        self.run_name = ""
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.metrics: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.artifacts: dict[str, bytes] = {}
        self.models: dict[str, dict] = {}  # name -> {"model", "input_example", "tags"}
        self.images: dict[str, list] = defaultdict(list)  # key -> [(step, RGB array)]
        self.status: str | None = None

    def start(self, run_name, params, tags):
        self.run_id, self.run_name = "memory", run_name
        self.params.update(params)
        self.tags.update(tags)

    def log_metrics(self, metrics, step):
        for name, value in metrics.items():
            self.metrics[name].append((step, float(value)))

    def log_artifact(self, local_path, artifact_path=None):
        path = Path(local_path)
        key = f"{artifact_path}/{path.name}" if artifact_path else path.name
        self.artifacts[key] = path.read_bytes()

    def log_artifacts(self, local_dir, artifact_path=None):
        """Every file under ``local_dir``, keyed by its path below it (after ``artifact_path``)."""
        root = Path(local_dir)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = path.relative_to(root).as_posix()
            self.artifacts[f"{artifact_path}/{key}" if artifact_path else key] = path.read_bytes()

    def log_model(self, model, name, input_example, tags=None):
        self.models[name] = {"model": model, "input_example": input_example, "tags": dict(tags or {})}
        return f"memory:/{name}"

    def set_tags(self, tags):
        self.tags.update(tags)
        self.run_name = tags.get("mlflow.runName", self.run_name)  # as MLflow renames a run

    def finish(self, status):
        self.status = status

    def log_image(self, key, image, step):
        """An image (RGB array) of the series ``key`` at ``step``: ``images[key]`` lists
        (step, image) in the order logged."""
        self.images[key].append((int(step), image))

    def log_image_series(self, key, images):
        """``log_image`` for each (step, image) of ``images``, in order."""
        for step, image in images:
            self.log_image(key, image, step)
