"""``zoo-server``: a shared MLflow tracking server on a PostgreSQL database, in the foreground
(zoo.tracking.server runs both; why PostgreSQL, and why loopback by default, is said there).

    zoo-server start --root ~/gradzoo-server                 # loopback only, port 5000
    zoo-server start --root /srv/gradzoo --host 0.0.0.0      # every interface: the whole network

A bad port, an empty root or an address that cannot be bound exits 2 with one line, before
PostgreSQL starts (seconds).
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

from zoo.tracking.server import BindError, check_bind, log_tail, serving  # standard library only


def _stop_on_signal(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="zoo-server", description="A shared MLflow tracking server on PostgreSQL, in the "
                                       "foreground; Ctrl-C or SIGTERM stops the server and the database.")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start PostgreSQL and the MLflow server under --root")
    start.add_argument("--root", required=True,
                       help="folder for the database cluster, artifacts and logs (reused next time)")
    start.add_argument("--host", default="127.0.0.1",
                       help="interface the MLflow server binds to (default 127.0.0.1, this machine "
                            "only; 0.0.0.0 exposes every run to the network, without authentication)")
    start.add_argument("--port", type=int, default=5000, help="MLflow server port (default 5000)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be a TCP port in 1..65535, got {args.port}")
    # before PostgreSQL starts (seconds), one line each: '' would serve the current folder
    if not args.root.strip():
        print("zoo-server: --root must name a folder, got ''", file=sys.stderr)
        return 2
    try:
        check_bind(args.host, args.port)
    except BindError as err:
        print(f"zoo-server: {err}", file=sys.stderr)
        return 2

    # Ctrl-C, kill, the terminal closed: stop both cleanly (SIGINT too: a shell without job
    # control starts background commands with SIGINT ignored, and Python then leaves it so)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    try:
        with serving(Path(args.root).expanduser(), args.host, args.port) as (database, server):
            shown = server.uri
            if args.host in ("0.0.0.0", "::"):
                shown = f"http://{socket.getfqdn()}:{server.port}"
            print(f"zoo-server: MLflow at {shown} (UI and API), runs in PostgreSQL {database.uri}, "
                  f"artifacts in {server.artifacts}\n"
                  f"  export MLFLOW_TRACKING_URI={shown}\n"
                  f"  zoo-ablate STUDY tracking=server\n"
                  f"In a browser new to MLflow 3.17, click 'Model training' at the top of the UI's sidebar "
                  f"once: it opens experiments on its GenAI overview otherwise.\n"
                  f"Ctrl-C stops it; logs: {server.log}, {database.log}", flush=True)
            while server.alive:
                time.sleep(1.0)
            print(f"zoo-server: the MLflow server exited ({server.process.returncode}); "
                  f"{server.log}:\n{log_tail(server.log)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("zoo-server: stopped", flush=True)
        return 0
    except (RuntimeError, OSError) as err:
        print(f"zoo-server: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
