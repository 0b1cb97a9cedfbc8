"""A shared MLflow tracking server on a PostgreSQL database, for a team on one box (``zoo-server``,
whose command line is zoo.cli.server).

Why a server: several people (or a cluster's nodes) append to one history, and ``tracking=server``
jobs need nothing but ``MLFLOW_TRACKING_URI``; artifacts go through the server
(``--artifacts-destination``), so a job needs no shared disk. Why PostgreSQL and not the sqlite
default: sqlite locks the whole file per write and its locks are unreliable over NFS, which is
where a team's file usually ends up (``mlflow server --help`` shows a team server as
``--backend-store-uri postgresql://...``). Why loopback by default: the server has no
authentication, so anyone who reaches the port can read and delete every run; ``--host 0.0.0.0``
is the user's explicit choice.

The cluster lives in ``<root>/postgres`` (reused on the next start, so history persists), the
artifacts in ``<root>/artifacts``, the server's log in ``<root>/mlflow-server.log``. PostgreSQL
trusts local and loopback connections only (initdb ``--auth=trust``: its pg_hba.conf lists the
unix socket, 127.0.0.1 and ::1) and listens on 127.0.0.1 whatever the MLflow server binds to.
PostgreSQL refuses to run as root; as root the cluster is run by the ``postgres`` user.
Only the standard library (and zoo.tracking.repair, which needs no more) is imported here:
``zoo-server --help``, which imports this module, starts at once.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from zoo.tracking.repair import running  # standard library only, like this module

DATABASE = "mlflow"
PG_USER_AS_ROOT = "postgres"
SOCKET_PATH_MAX = 100          # a unix socket path must fit in sockaddr_un (107 bytes on Linux)
CONF_INCLUDE = "zoo_server.conf"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BindError(RuntimeError):
    """The MLflow server could not listen where it was asked; the message says why, in one line."""


def check_bind(host: str, port: int) -> None:
    """The server can listen on ``host``:``port``: bound once here and released, so that each
    cause is named as what it is: a name that does not resolve, an address this machine does
    not have, a port in use. Raises BindError."""
    import errno

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise BindError(f"--host {host!r} is not an IP address or a name that resolves "
                        f"({getattr(err, 'strerror', None) or err}); use e.g. 127.0.0.1 or 0.0.0.0") from None
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is free
            s.bind(address)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise BindError(f"port {port} on {host} is taken ({err.strerror}): another server runs "
                            f"there; choose another --port") from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise BindError(f"--host {host} is not an address of this machine ({err.strerror}); use "
                            f"127.0.0.1, 0.0.0.0 or one of its interfaces' addresses") from None
        if err.errno == errno.EACCES:
            raise BindError(f"port {port} on {host} needs privileges ({err.strerror}); choose a port "
                            f"above 1023") from None
        raise BindError(f"cannot listen on {host} port {port} ({err.strerror})") from None


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def postgres_bin() -> Path:
    """The folder with PostgreSQL's server programs: initdb on PATH, else the newest
    /usr/lib/postgresql/*/bin (Debian and Ubuntu keep them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if candidates:
        return Path(candidates[-1]).parent
    raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                       "apt-get install postgresql (or use a PostgreSQL server you already run, "
                       "docs/guides/tracking-server.md)")


def postgres_driver() -> str:
    """The installed PostgreSQL driver SQLAlchemy should use. A bare ``postgresql://`` means
    psycopg (3) from SQLAlchemy 2.1 on but psycopg2 before, and gradzoo[cluster] installs
    psycopg2-binary, so the URI names it."""
    import importlib.util

    for module, name in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return name
    raise RuntimeError("no PostgreSQL driver for MLflow: pip install 'gradzoo[cluster]' (psycopg2-binary)")


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Postgres:
    """A private PostgreSQL cluster in ``folder``: ``data/`` (the cluster), ``socket/``,
    ``postgres.log``. :meth:`start` initialises the cluster on first use and reuses it after;
    ``pid`` and ``port`` come from ``data/postmaster.pid`` while it runs."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).absolute()
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.as_root = os.geteuid() == 0
        self.user = PG_USER_AS_ROOT if self.as_root else _login()
        self._socket: Path | None = None
        self._started = False  # stop() stops only a cluster this object started

    # -- what is running ------------------------------------------------------------------------
    def _postmaster(self) -> list[str]:
        try:
            return (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return []

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the cluster runs."""
        lines = self._postmaster()
        return int(lines[0]) if lines else None

    @property
    def port(self) -> int | None:
        lines = self._postmaster()
        return int(lines[3]) if len(lines) > 3 else None

    @property
    def dsn(self) -> str:
        """The libpq URI of the ``mlflow`` database (TCP on loopback, trusted): psql, psycopg2."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI MLflow takes (``--backend-store-uri``), naming the driver."""
        return self.dsn.replace("postgresql://", f"postgresql+{postgres_driver()}://", 1)

    # -- start and stop ---------------------------------------------------------------------------
    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", PG_USER_AS_ROOT, "--"] if self.as_root else []
        done = subprocess.run(prefix + list(argv), capture_output=True, text=True, cwd="/")
        if check and done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}):\n"
                               f"{(done.stderr or done.stdout).strip()}\n(log: {self.log})")
        return done

    def _own(self, path: Path) -> None:
        """As root: hand ``path`` to the postgres user and check it can really reach it (every
        folder above must be searchable by it; /root and pytest's temp folders are not)."""
        if not self.as_root:
            return
        import pwd

        entry = pwd.getpwnam(PG_USER_AS_ROOT)
        for p in [path, *path.rglob("*")]:
            os.chown(p, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        if self._run("test", "-w", str(path), check=False).returncode != 0:
            raise RuntimeError(f"PostgreSQL runs as the {PG_USER_AS_ROOT!r} user (it refuses root), "
                               f"which cannot reach {path} (a folder above it is private); "
                               f"choose a folder it can reach, e.g. /srv/gradzoo-server, or run "
                               f"zoo-server as a normal user")

    def _socket_dir(self) -> Path:
        path = self.folder / "socket"
        if len(str(path / ".s.PGSQL.65535")) > SOCKET_PATH_MAX:  # a deep folder: sockets in /tmp
            import tempfile

            path = Path(tempfile.mkdtemp(prefix="zoo-pg-"))
        path.mkdir(exist_ok=True)
        return path

    def start(self, port: int | None = None) -> "Postgres":
        bin_dir = postgres_bin()
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.pid is not None and running(self.pid):
            raise RuntimeError(f"a PostgreSQL server already runs on {self.data} (pid {self.pid}): "
                               f"another zoo-server on this root, or one a killed zoo-server left; "
                               f"stop it with: pg_ctl -D {self.data} -m fast stop"
                               + (f" (as root: runuser -u {PG_USER_AS_ROOT} -- ...)" if self.as_root else ""))
        fresh = not (self.data / "PG_VERSION").is_file()
        self._socket = self._socket_dir()
        self._own(self.folder)
        if self._socket.parent != self.folder:
            self._own(self._socket)
        if fresh:
            self._run(str(bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                      "-E", "UTF8", "--locale=C")
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(f"\ninclude_if_exists = '{CONF_INCLUDE}'  # zoo-server: address, port, socket\n")
        port = port or free_port()
        (self.data / CONF_INCLUDE).write_text(
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            f"unix_socket_directories = '{self._socket}'\n")
        self._own(self.data / CONF_INCLUDE)
        self._started = True
        self._run(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "start")
        made = self._run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", self.user,
                         DATABASE, check=False)
        if made.returncode != 0 and "already exists" not in made.stderr:
            self.stop()
            raise RuntimeError(f"createdb {DATABASE} failed: {made.stderr.strip()}")
        return self

    def stop(self) -> None:
        """Stop the cluster (fast: running transactions are rolled back) and wait for it."""
        if not self._started:
            return
        self._started = False
        pid = self.pid
        self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60",
                  "stop", check=False)
        # pg_ctl returns once postmaster.pid is gone, which the postmaster removes just before it exits
        deadline = time.monotonic() + 60
        while pid is not None and running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._socket is not None and self._socket.parent != self.folder:
            shutil.rmtree(self._socket, ignore_errors=True)


def _login() -> str:
    import getpass

    return getpass.getuser()


def _health(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


class MlflowServer:
    """``mlflow server`` over a database, serving artifacts from ``artifacts`` through itself
    (clients upload and download over HTTP: ``mlflow-artifacts:/``), in its own process group."""

    def __init__(self, backend_uri: str, artifacts: Path, host: str = "127.0.0.1",
                 port: int | None = None, log: Path | None = None):
        self.backend_uri, self.artifacts, self.host = backend_uri, Path(artifacts).absolute(), host
        self.port = port or free_port("127.0.0.1" if host in ("0.0.0.0", "::") else host)
        self.log = Path(log) if log else self.artifacts.parent / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """Where clients on this machine reach it (loopback when bound to every interface)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 180.0) -> "MlflowServer":
        """Start and wait until ``GET /health`` answers (a fresh database is migrated first)."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        check_bind(self.host, self.port)  # a server already there would answer /health in our place
        argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend_uri,
                "--serve-artifacts", "--artifacts-destination", str(self.artifacts),
                "--host", self.host, "--port", str(self.port), "--workers", "1"]
        # MLflow 3.17 starts a job runner and seven huey consumers beside a database-backed server,
        # for GenAI scorers and trace roll-ups that gradient runs never ask for; on a small box
        # they compete with training. Off unless the environment says otherwise.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not _health(self.uri):
                if not self.alive:
                    raise RuntimeError(f"mlflow server exited with {self.process.returncode}; "
                                       f"{self.log}:\n{log_tail(self.log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not answer {self.uri}/health within "
                                       f"{timeout:g} s; {self.log}:\n{log_tail(self.log)}")
                time.sleep(0.5)
        except BaseException:  # Ctrl-C while waiting too: leave no server behind
            self.stop()
            raise
        return self

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the whole group (uvicorn and its worker), SIGKILL after ``grace`` s."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(self.process.pid, signal.SIGKILL)


@contextlib.contextmanager
def serving(root: Path, host: str = "127.0.0.1", port: int | None = None):
    """PostgreSQL and an MLflow server on it, both under ``root``; yields (database, server) and
    stops both (the server first) on exit, error or not."""
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    database, server = Postgres(root / "postgres"), None
    try:
        database.start()
        server = MlflowServer(database.uri, root / "artifacts", host, port, log=root / "mlflow-server.log")
        server.start()
        yield database, server
    finally:
        if server is not None:
            server.stop()
        database.stop()


@contextlib.contextmanager
def team_server(root: Path, host: str = "127.0.0.1", port: int | None = None):
    """A team's tracking server under ``root``; yields its http URI (``tracking.uri=``)."""
    with serving(root, host, port) as (_, server):
        yield server.uri
