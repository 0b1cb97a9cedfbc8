"""``zoo-runs``: look after the runs in an MLflow store (zoo.tracking.repair does the work).

    zoo-runs repair [--uri URI] [--experiment NAME] [--dry-run] [--unowned]

Ends the RUNNING runs whose process is gone as KILLED and lists them, one line each; exit code
2 with one line when the store cannot be read or written.
"""
from __future__ import annotations

import argparse
import sys

from zoo.tracking.repair import STALE_SECONDS, check_store, describe, repair
from zoo.tracking.store import StoreError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo-runs", description="Look after the runs in an MLflow store.")
    sub = parser.add_subparsers(dest="command", required=True)
    fix = sub.add_parser("repair", help="end RUNNING runs whose process is gone as KILLED",
                         description="A RUNNING run is an orphan when its owner pid is dead on this host "
                                     f"or its heartbeat is over {STALE_SECONDS:.0f} s old; each is ended as "
                                     "KILLED with zoo.outcome=killed and zoo.repaired saying why.")
    fix.add_argument("--uri", default="sqlite:///mlflow.db", help="MLflow store (default: %(default)s)")
    fix.add_argument("--experiment", help="only this experiment (default: every experiment)")
    fix.add_argument("--dry-run", action="store_true", help="list the orphans, change nothing")
    fix.add_argument("--unowned", action="store_true",
                     help=f"also RUNNING runs without owner tags started over {STALE_SECONDS:.0f} s ago")
    args = parser.parse_args(argv)
    try:
        check_store(args.uri, args.dry_run)
        orphans = repair(args.uri, args.experiment, args.dry_run, args.unowned)
    except StoreError as err:
        print(f"zoo-runs: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        print(f"zoo-runs: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
        return 2
    for line in describe(orphans, args.dry_run):
        print(f"zoo-runs: {line}")
    print(f"zoo-runs: {len(orphans)} orphaned run(s) {'found' if args.dry_run else 'repaired'} in {args.uri}"
          + (f", experiment {args.experiment}" if args.experiment else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
