"""``zoo-diagnose MODEL.keras --data DATA.npz``: diagnose a saved model's gradients (zoo.analysis.diagnosis).

Prints the report (markdown) and writes it with the figure and the raw statistics to ``--out``
(default ``MODEL-diagnosis/`` beside the working directory); ``--mlflow`` also logs them as an
MLflow run (the zoo's store, ``sqlite:///mlflow.db``, experiment ``gradzoo``, unless told).

Exit codes: 0 healthy, 1 a problem found (any finding of zoo.analysis.diagnosis.findings: the verdict is
not healthy, the loss cannot read the targets, inputs or targets far from unit scale, a layer
mostly saturated or dead, ...), 2 bad input, in one line: a missing or unreadable file, arrays
that do not fit the model's input, no loss known (a model saved without ``compile()`` and no
``--loss``), an unknown loss, a model that safe mode refuses. Everything that can be checked
from the files is checked before TensorFlow loads; what only the loaded model can tell (a loss
that does not fit its output: a softmax cross-entropy over one unit, labels outside a sparse
cross-entropy's classes) is refused after loading, in one line, exit 2. ``--mlflow`` tags the run
with every finding (``zoo.findings``, ``zoo.finding.<kind>``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import zoo.runtime.stopping as stopping
from zoo._lazy import pin_tensorflow
from zoo.cli import stopped
from zoo.analysis.diagnosis.arrays import (InputError, check_fits, compiled_loss, input_shape, model_config,
                                  model_input_shape, read_arrays)
from zoo.tracking.store import StoreError, check_folder
from zoo.analysis.diagnosis import diagnose
from zoo.config.schema import SpecError
from zoo.instruments.layout import log10_for_charts
from zoo.instruments.series import mlflow_key
from zoo.models.serializable import register_all
from zoo.tracking import provenance, repair
from zoo.tracking.mlflow_sink import MlflowSink
from zoo.training.spec import TrackingConfig, check_tracking

SEED_LIMIT = 2**32  # numpy's and TensorFlow's seeds are 32-bit


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (argparse would print the usage too), exit 2 in main
        raise InputError(f"{message} (zoo-diagnose --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zoo-diagnose", description="Diagnose a saved Keras model's gradients on your data: "
                "per-layer gradient norms, saturation, gradient through time, the verdict, and what the "
                "zoo's reproduced studies support. Nothing in the model is changed.")
    p.add_argument("model", help="a Keras 3 model file (.keras)")
    p.add_argument("--data", required=True, help=".npz with arrays x and y (or x_train and y_train)")
    p.add_argument("--loss", help="a Keras loss name (default: the loss the model was compiled with); a "
                   "cross-entropy is taken from logits unless the model ends in a softmax or sigmoid")
    p.add_argument("--batches", type=int, default=4, help="batches to measure (default 4)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per batch (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which examples make the batches (default 0)")
    p.add_argument("--out", help="folder for report.md, gradient_flow.png, stats.npz (default MODEL-diagnosis)")
    p.add_argument("--mlflow", action="store_true", help="also log the diagnosis as an MLflow run")
    p.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="MLflow store for --mlflow")
    p.add_argument("--experiment", default="gradzoo", help="MLflow experiment for --mlflow")
    p.add_argument("--unsafe", action="store_true", help="load with Keras' safe mode off (Lambda layers: "
                   "only for a file you trust)")
    return p


def _check(args) -> tuple[dict, dict]:
    """What can be checked before TensorFlow: (model config, arrays); raises InputError."""
    for name in ("batches", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 0 <= args.seed < SEED_LIMIT:
        raise InputError(f"--seed must be an integer in [0, 2**32), got {args.seed}")
    config = model_config(args.model)
    arrays = read_arrays(args.data)
    check_fits(args.data, input_shape(config), arrays["x"])
    if args.loss is None and compiled_loss(config) is None:
        raise InputError(f"{args.model}: no loss known: the model was saved without compile(); give "
                         "--loss NAME (for example mse, sparse_categorical_crossentropy)")
    out = Path(args.out or f"{Path(args.model).stem}-diagnosis")
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    try:  # a file made and deleted there: os.access says yes to root on /proc, /sys and read-only mounts
        check_folder(out, f"--out {out}")
    except StoreError as err:
        raise InputError(str(err)) from None
    if args.mlflow:
        try:
            tracking = TrackingConfig(uri=args.tracking_uri, experiment=args.experiment)
        except SpecError as err:  # an experiment name MLflow would refuse, or an unknown store
            raise InputError(f"--{err.key.replace('_', '-').replace('uri', 'tracking-uri')}: {err.message}") from None
        try:
            check_tracking(tracking)
        except SpecError as err:
            raise InputError(f"--tracking-uri: {err.message.replace('or set tracking.uri=null', 'or leave out --mlflow')}") from None
    return config, arrays


def _load(args):
    import warnings

    import keras


    register_all()  # a zoo model's own layers (a Transformer's positions, ResNet's shortcut) load in safe mode
    try:
        with warnings.catch_warnings():  # the optimizer's slots are not needed: nothing is trained
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(args.model, safe_mode=not args.unsafe, compile=True)
    except Exception as err:  # Keras' message, first line: an unknown class, a Lambda in safe mode
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        hint = "; if you trust the file, add --unsafe" if "safe_mode" in str(err) else ""
        raise InputError(f"{args.model}: Keras cannot load it: {first}{hint}") from None


def _log(args, d, paths) -> str:
    sink = MlflowSink(args.tracking_uri, args.experiment)
    repair.keep_alive(args.tracking_uri, args.experiment)  # a stop ends the run KILLED (zoo.cli.stopped)
    sink.start(f"diagnose {Path(args.model).stem}",
               {"model": str(args.model), "data": str(args.data), "loss": d.loss_name, "batches": d.batches,
                "batch_size": d.batch_size, "seed": args.seed},
               {**provenance.tags(args.seed), "zoo.kind": "diagnosis"})
    try:
        metrics = {f"health/{k}": v for k, v in d.verdict.numbers.items()}
        metrics[mlflow_key("loss")] = float(np.median(d.stats.loss))
        if d.probed.progress:
            metrics["progress/loss_ratio"] = d.probed.progress[1]
        metrics.update({f"{mlflow_key('grad_norm')}/{r['layer']}": float(log10_for_charts(r["median"]))
                        for r in d.layer_rows()})
        sink.log_metrics(metrics, 0)
        for path in paths.values():
            sink.log_artifact(str(path), "diagnosis")
        sink.set_tags({**d.tags(), "mlflow.note.content": d.markdown()[:5000]})
        stopping.check()  # a stop whose raise was swallowed while logging (seen: in JAX's gc callback)
    except BaseException as err:
        stop = stopped.as_stop(err)
        if stop is None:
            sink.finish("FAILED")
            raise
        sink.set_tags({"zoo.outcome": "killed", "zoo.killed": stopping.name_of(stop)})
        sink.finish("KILLED")
        raise stop from None
    sink.set_tags({"zoo.outcome": "finished"})  # a run FINISHED only once everything it promises is written
    sink.finish("FINISHED")
    return sink.run_id


def main(argv: list[str] | None = None) -> int:
    """``zoo-diagnose``; its exit code. Ctrl-C and SIGTERM take zoo-train's stop path (zoo.cli.stopped):
    the MLflow run of ``--mlflow`` ended KILLED with its tags, one line, exit 130 or 143."""
    stopping.install()
    try:
        code = _main(argv)
        stopping.check()  # signalled, the command does not exit 0 whatever swallowed the raise
        return code
    except BaseException as err:
        stop = stopped.as_stop(err)
        if stop is None:
            raise
        stopped.end("zoo-diagnose", stop)


def _main(argv: list[str] | None) -> int:
    try:
        args = parser().parse_args(argv)
        _, arrays = _check(args)
        pin_tensorflow("zoo-diagnose")
        model = _load(args)
        check_fits(args.data, model_input_shape(model), arrays["x"])
        d = diagnose(model, arrays, loss=args.loss, batches=args.batches, batch_size=args.batch_size,
                     seed=args.seed, label=Path(args.model).stem)
        stopping.check()  # a stop whose raise TensorFlow swallowed while tracing
    except InputError as err:
        stop = stopping.stop_behind(err)
        if stop is not None:  # a signal that TensorFlow turned into an error the diagnosis caught
            raise stop from None
        print(f"zoo-diagnose: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or f"{Path(args.model).stem}-diagnosis")
    paths = d.save(out)
    print(d.markdown())
    print(f"zoo-diagnose: wrote {', '.join(str(p) for p in paths.values())}")
    if args.mlflow:
        run_id = _log(args, d, paths)
        print(f"zoo-diagnose: MLflow run {run_id} in {args.tracking_uri}")
    return 1 if d.problem else 0


if __name__ == "__main__":
    sys.exit(main())
