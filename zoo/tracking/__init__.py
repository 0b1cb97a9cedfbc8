"""Where a run's records go: an in-memory sink, or MLflow (``sink_for`` picks by config)."""
from __future__ import annotations


def sink_for(tracking):
    """MLflow when ``tracking.uri`` is set, memory otherwise."""
    if tracking.uri:
        from zoo.tracking.mlflow_sink import MlflowSink

        return MlflowSink(tracking.uri, tracking.experiment)
    from zoo.tracking.memory import MemorySink

    return MemorySink()
