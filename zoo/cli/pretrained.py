"""``zoo-pretrained``: list, show and verify the pretrained entries, and regenerate one from its
recipe.

    zoo-pretrained list                   the entries, their pair and knob, size and headline metrics
    zoo-pretrained show NAME              one entry's manifest record (JSON)
    zoo-pretrained verify [NAME ...]      check every file's sha256 (fetched entries: their cached copy)
    zoo-pretrained train NAME [--register] [--tracking-uri URI] [--experiment E] [--update]

``list``, ``show`` and ``verify`` import no TensorFlow. ``train`` reruns the recipe with the
project's own code and compares the metrics with the manifest's within the tolerance of
zoo.pretrained.recipes (exit 1 when one is off); ``--register`` tracks that run in MLflow and
registers its model under the entry's name with the alias ``zoo``; ``--update`` (maintainers)
writes the new weights and metrics into the package.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import zoo.runtime.stopping as stopping
from zoo.cli import stopped
from zoo.errors import InputError
from zoo.pretrained import integrity, load_pretrained, recipes
from zoo.pretrained.manifest import MANIFEST, WEIGHTS, ManifestError, load as load_manifest
from zoo.config.schema import SpecError
from zoo.data import DATASETS
from zoo.pretrained.mlflow_registry import register
from zoo.pretrained.recipes import ATOL, RTOL
from zoo.tracking import repair
from zoo.tracking.mlflow_sink import MlflowSink
from zoo.training.spec import MAX_THREADS, TrackingConfig, check_tracking

HEADLINE = ("final/val_accuracy", "final/val_loss")


def _fmt(value: float) -> str:
    return "0" if value == 0 else f"{value:.3g}"


def cmd_list(args) -> int:
    manifest = load_manifest()
    print("| name | pair: knob | params | size | val | first-layer grad at init | verdict |")
    print("|---|---|---:|---:|---|---:|---|")
    for e in manifest.entries:
        knob = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in e.knob.items())
        val = next((f"{k.split('/')[1]} {_fmt(e.metrics[k])}" for k in HEADLINE if k in e.metrics), "")
        first = e.metrics.get("summary/grad_first_init")
        print(f"| {e.name} | {', '.join(e.pairs)}: {knob} | {e.params:,} | "
              f"{e.size / 1024:.0f} KB | {val} | {'' if first is None else _fmt(first)} | {e.verdict} |")
    print(f"\n{len(manifest.entries)} entries, {sum(e.size for e in manifest.entries) / 1e6:.2f} MB; "
          f"pairs: " + "; ".join(f"{p.name} ({p.a} vs {p.b}: {p.knob})" for p in manifest.pairs))
    return 0


def cmd_show(args) -> int:
    manifest = load_manifest()
    entry = manifest.get(args.name)
    record = entry.to_json()
    record["pair_details"] = [vars_of(manifest.pair(p)) for p in entry.pairs]
    print(json.dumps(record, indent=2))
    return 0


def vars_of(obj) -> dict:
    from dataclasses import asdict

    return asdict(obj)


def cmd_verify(args) -> int:
    manifest = load_manifest()
    names = args.names or manifest.names()
    bad = 0
    for name in names:
        entry = manifest.get(name)
        path = integrity.cached_path(entry.file) if entry.url else entry.shipped_path
        try:
            if entry.url and not path.is_file():
                print(f"{name}: not cached yet (fetched from {entry.url} on first load)")
                continue
            integrity.check_file(path, entry.sha256, entry.size)
            print(f"{name}: ok  {entry.sha256[:16]}…  {entry.size} bytes")
        except (integrity.IntegrityError, FileNotFoundError) as err:
            bad += 1
            print(f"{name}: FAILED  {err}")
    return 1 if bad else 0


def check_train(args) -> None:
    """``train``'s options, before TensorFlow (as zoo-train checks its config): the threads and
    tolerances, and with ``--register`` the tracking store (a server must answer within 3 s,
    a sqlite store's folder must take a file: zoo.training.spec.check_tracking). Raises InputError."""
    if not 0 <= args.threads <= MAX_THREADS:
        raise InputError(f"--threads must be in [0, {MAX_THREADS}] (0: TensorFlow's choice), got {args.threads}")
    for name in ("rtol", "atol"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"--{name} must be a finite number >= 0, got {value}")
    if args.register:
        try:
            check_tracking(TrackingConfig(uri=args.tracking_uri, experiment=args.experiment))
        except SpecError as err:
            flag = "--experiment" if "experiment" in err.key else "--tracking-uri"
            raise InputError(f"{flag}: {err.message.replace('or set tracking.uri=null', 'or leave out --register')}") from None


def cmd_train(args) -> int:
    manifest = load_manifest()
    entry = manifest.get(args.name)
    check_train(args)
    sink = None
    if args.register:
        repair.keep_alive(args.tracking_uri, args.experiment)  # a stop ends its runs KILLED (zoo.cli.stopped)
        sink = MlflowSink(args.tracking_uri, args.experiment)
    extra = (f"trainer.threads={args.threads}",) + (("tracking.log_model=false",) if args.register else ())
    with tempfile.TemporaryDirectory(prefix="gradzoo-train-") as tmp:
        out = WEIGHTS if args.update else Path(tmp)
        trained = recipes.train(entry, out, extra=extra, sink=sink)
        checks = recipes.check(entry.metrics, trained.entry.metrics, args.rtol, args.atol)
        print(f"{entry.name}: trained in {trained.entry.train_seconds:.1f}s; metrics against the "
              f"manifest (|new - old| <= {args.atol:g} + {args.rtol:g}·|old|):")
        print("| metric | manifest | this run | ok |\n|---|---:|---:|---|")
        for c in checks:
            print(f"| {c.metric} | {c.expected:.6g} | {c.got:.6g} | {'yes' if c.ok else 'NO'} |")
        same = trained.entry.sha256 == entry.sha256
        print(f"weights sha256 {'identical to' if same else 'differs from'} the shipped file"
              + ("" if same else " (the .keras zip holds a save timestamp; compare metrics)"))
        if args.register:
            data = DATASETS.build(entry.data["name"], **{k: v for k, v in entry.data.items()
                                                         if k not in ("name", "input_shape", "num_outputs")})
            uri, version = register(sink, trained, data.x_val, shipped=entry)
            print(f"registered {entry.name} version {version} (alias @zoo) from {uri} in {args.tracking_uri}")
        if args.update:
            manifest.with_entry(trained.entry).save(MANIFEST)
            print(f"updated {MANIFEST} and {out / entry.file}")
        elif args.update_metrics:
            return _update_metrics(manifest, entry, trained)
    return 0 if all(c.ok for c in checks) or args.update else 1


def _update_metrics(manifest, entry, trained) -> int:
    """The new run's metrics, verdict and versions into the manifest, keeping the shipped file,
    but only if the retrained weights equal the shipped ones value for value (training did not
    change, the instruments did)."""
    import numpy as np


    shipped = load_pretrained(entry.name)
    same = len(shipped.weights) == len(trained.model.weights) and all(
        np.array_equal(a.numpy(), b.numpy()) for a, b in zip(shipped.weights, trained.model.weights))
    if not same:
        print(f"{entry.name}: the retrained weights differ from the shipped file; use --update", file=sys.stderr)
        return 1
    kept = {k: getattr(entry, k) for k in ("file", "sha256", "size", "train_seconds")}
    manifest.with_entry(replace(trained.entry, **kept)).save(MANIFEST)
    print(f"{entry.name}: retrained weights equal the shipped file's; metrics and verdict updated in {MANIFEST}")
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line (argparse prints the usage too), exit 2 in main
        raise InputError(f"{message} (zoo-pretrained --help)")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zoo-pretrained", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the entries").set_defaults(run=cmd_list)
    show = sub.add_parser("show", help="one entry's manifest record")
    show.add_argument("name")
    show.set_defaults(run=cmd_show)
    verify = sub.add_parser("verify", help="check the files' sha256")
    verify.add_argument("names", nargs="*")
    verify.set_defaults(run=cmd_verify)
    train = sub.add_parser("train", help="regenerate an entry from its recipe and check its metrics")
    train.add_argument("name")
    train.add_argument("--register", action="store_true",
                       help="track the run in MLflow and register the model as NAME@zoo")
    train.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    train.add_argument("--experiment", default="gradzoo-pretrained")
    train.add_argument("--update", action="store_true",
                       help="maintainers: write the new weights and metrics into the package")
    train.add_argument("--update-metrics", action="store_true",
                       help="maintainers: write the new metrics and verdict into the manifest, keeping the "
                            "shipped weights (refused unless the retrained weights equal them)")
    train.add_argument("--threads", type=int, default=0,
                       help="TensorFlow threads (execution only: op determinism gives the same numbers)")
    train.add_argument("--rtol", type=float, default=RTOL)
    train.add_argument("--atol", type=float, default=ATOL)
    train.set_defaults(run=cmd_train)
    return p


def main(argv: list[str] | None = None) -> int:
    """``zoo-pretrained``; its exit code: 2 for bad input (one line, before TensorFlow), and a
    stop takes zoo-train's path (zoo.cli.stopped): the runs of ``train --register`` ended KILLED
    with their tags, exit 130 or 143."""
    stopping.install()
    try:
        args = parser().parse_args(argv)
        code = args.run(args)
        stopping.check()  # a stop whose raise a library swallowed
        return code
    except (InputError, ManifestError) as err:  # an unknown name is an InputError too
        stop = stopping.stop_behind(err)
        if stop is None:
            print(f"zoo-pretrained: {err}", file=sys.stderr)
            return 2
        stopped.end("zoo-pretrained", stop)
    except BaseException as err:
        stop = stopped.as_stop(err)
        if stop is None:
            raise
        stopped.end("zoo-pretrained", stop)


if __name__ == "__main__":
    sys.exit(main())
