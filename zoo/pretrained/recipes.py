"""Regenerating an entry from its recipe, by the project's own training code.

``train`` runs ``zoo.training.run.train(recipe + seed + tracking.uri=null)`` exactly as ``zoo-train`` would,
saves the trained model in Keras' native format and describes it as a manifest entry (hash,
size, metrics, versions). ``check`` compares a new run's metrics with the manifest's.

Tolerance: training runs with TensorFlow op determinism (``trainer.deterministic=true``, the
default), so on the same machine, TensorFlow and thread count a recipe reproduces its numbers
bit for bit. Across machines and TensorFlow builds float32 reductions may be ordered
differently, which moves a few-epoch run's final metrics in the 4th-5th significant digit. A
metric reproduces when ``|new - old| <= ATOL + RTOL * |old|``: RTOL = 1e-3 (0.1%), ATOL = 1e-6
(so an underflowed gradient, exactly 0, must stay below 1e-6).
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

from zoo.pretrained.integrity import sha256_file
from zoo.pretrained.manifest import Entry
from zoo.tracking.runs import code_version
from zoo.training.spec import compose_spec

RTOL, ATOL = 1e-3, 1e-6
KEPT = ("final/", "summary/")
# execution-only keys: how fast, not what is computed (zoo.tracking.runs.EXECUTION_ONLY)
EXECUTION = ("tracking.uri=null",)


@dataclass
class Trained:
    entry: Entry          # the entry as this run would write it
    model: object         # the trained keras.Model
    result: object        # zoo.training.run.RunResult


def metrics_of(final: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(final.items()) if k.startswith(KEPT)}


def _versions() -> dict[str, str]:
    import keras
    import tensorflow as tf


    # the version plus the fingerprint of the code that trained it (zoo.tracking.runs)
    return {"gradzoo_version": code_version(), "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__}


def train(entry: Entry, out_dir: Path, extra: tuple[str, ...] = (), sink=None) -> Trained:
    """Train ``entry``'s recipe and save the model as ``out_dir/entry.file``."""
    from zoo.training.run import train as zoo_train

    overrides = [*entry.overrides(), *EXECUTION, *extra]
    spec = compose_spec(overrides)
    started = time.perf_counter()
    result = zoo_train(overrides, sink=sink)
    seconds = time.perf_counter() - started
    if result.outcome != "finished":
        raise RuntimeError(f"{entry.name}: the recipe's run {result.outcome}; nothing saved")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / entry.file
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    result.model.save(tmp)
    tmp.replace(path)
    data = dict(spec.data.kwargs()) if hasattr(spec.data, "kwargs") else {}
    data = {"name": spec.data.name, **data}
    model_section = {"name": spec.model.name, **spec.model.kwargs()}
    model = result.model
    data.update(input_shape=[int(d) for d in model.inputs[0].shape[1:]],
                num_outputs=int(model.outputs[0].shape[-1]))
    new = replace(entry, model=model_section, data=data, metrics=metrics_of(result.final),
                  verdict=result.verdict.label, sha256=sha256_file(path), size=path.stat().st_size,
                  params=int(model.count_params()), train_seconds=round(seconds, 1), **_versions())
    return Trained(new, model, result)


@dataclass
class Check:
    metric: str
    expected: float
    got: float
    ok: bool


def check(expected: dict[str, float], got: dict[str, float],
          rtol: float = RTOL, atol: float = ATOL) -> list[Check]:
    """Every metric of the manifest against the new run's (a missing one fails)."""
    import math

    out = []
    for name, old in sorted(expected.items()):
        new = got.get(name, math.nan)
        ok = (math.isnan(old) and math.isnan(new)) or abs(new - old) <= atol + rtol * abs(old)
        out.append(Check(name, old, new, bool(ok)))
    return out


def machine() -> str:
    return f"{platform.machine()} {platform.system()}"
