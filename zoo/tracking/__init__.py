"""Where a run's records go: an in-memory sink, or MLflow (``sink_for`` picks by config)."""
from __future__ import annotations


def sink_for(tracking, parent_run_id: str | None = None):
    """MLflow when ``tracking.uri`` is set (nested under ``parent_run_id`` if given), memory otherwise."""
    if tracking.uri:
        from zoo.tracking.mlflow_sink import MlflowSink

        return MlflowSink(tracking.uri, tracking.experiment, parent_run_id)
    from zoo.tracking.memory import MemorySink

    return MemorySink()
