"""Putting a regenerated entry in MLflow: a normal zoo run (metrics, plots, raw statistics), its
model logged with the Keras flavour, and a registered model version under the entry's name with
the alias ``zoo``, so ``mlflow.keras.load_model("models:/NAME@zoo")`` loads it (after
``import zoo.models._layers``, which registers the zoo's layers)."""
from __future__ import annotations
from zoo.tracking.mlflow_sink import _scoped_tracking_uri
from zoo.tracking.store import client as store_client

ALIAS = "zoo"


def register(sink, trained, input_example, shipped=None) -> tuple[str, str]:
    """Log ``trained.model`` to the sink's run and register it; returns (model URI, version).
    ``shipped``: the manifest entry it regenerates (its file's hash is tagged beside the new one's;
    a ``.keras`` file holds its save time, so the two hashes differ even when the weights agree)."""
    entry = trained.entry
    tags = {"zoo.pretrained": entry.name, "zoo.sha256": entry.sha256, "zoo.verdict": entry.verdict}
    if shipped is not None:
        tags["zoo.shipped_sha256"] = shipped.sha256
    uri = sink.log_model(trained.model, entry.name, input_example[:2], tags)
    client = store_client(sink.uri)
    try:
        client.get_registered_model(entry.name)
    except Exception:  # RESOURCE_DOES_NOT_EXIST
        client.create_registered_model(entry.name, description=entry.description,
                                       tags={"zoo.pairs": ",".join(entry.pairs)})
    import mlflow


    with _scoped_tracking_uri(sink.uri):  # the registry lives in the tracking store by default
        version = mlflow.register_model(uri, entry.name, tags={**tags, "zoo.recipe": " ".join(entry.overrides())})
    client.set_registered_model_alias(entry.name, ALIAS, version.version)
    return uri, str(version.version)
