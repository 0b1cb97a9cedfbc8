"""Joining an existing Ray cluster (``zoo-ablate --launcher ray --address HOST:PORT``), checked
from the launching machine before the sweep starts.

Ray 2.60's token authentication: ``ray start --head`` turns it on when the head has a token
(``~/.ray/auth_token``, which every local ``ray.init()`` since 2.59 creates: one
``zoo-ablate --launcher ray --jobs 2`` is enough), but a driver or a ``ray start`` that names an
address turns it on only with ``RAY_AUTH_MODE=token``. Without it the driver retries for 20 s
and raises ``ConnectionError: Failed to connect to Ray cluster``, which does not say why.

Here, first: when ``RAY_AUTH_MODE`` is unset and this machine has a token (Ray's own sources, in
its order: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``), token mode is
turned on for this process and the jobs' driver, as Ray 2.60 does itself for ``address="auto"``;
a cluster without authentication ignores the token (tried: a token-mode driver joins a head
started with ``RAY_AUTH_MODE=disabled``). Then a TCP connection (3 s) and one GCS client in a
child process (about a second) say whether the head answers and takes this machine's token;
a refusal is one line saying what to set, exit 2, before any run exists.
Ray is imported only in that child: this module is cheap to import.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from zoo.config.schema import SpecError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_SOURCES = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"
# one GCS client, one attempt: AuthenticationError within a second when the token is refused
_PROBE = ("import sys\nfrom ray._raylet import GcsClient\n"
          "try:\n    GcsClient(address=sys.argv[1])\n"
          "except Exception as err:\n    print(type(err).__name__ + ': ' + str(err).splitlines()[0] if str(err) "
          "else type(err).__name__)\n    sys.exit(1)\n")


def token_available(environ=os.environ) -> bool:
    """This machine has a Ray token where Ray looks for one."""
    if environ.get("RAY_AUTH_TOKEN", "").strip() or environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    path = Path(environ.get("HOME", str(Path.home()))) / ".ray" / "auth_token"
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError("--address", f"must be HOST:PORT of the Ray head (ray start --head --port PORT) "
                                     f"or auto, got {address!r}")
    return host.strip("[]"), int(port)


def prepare(address: str | None, environ=os.environ, timeout: float = 3.0) -> str | None:
    """Make this process able to join the cluster at ``address`` (turn token mode on when a
    token is here and nothing says otherwise) and check that it can; SpecError saying what to
    set when not. Returns what was turned on (a line to print), or None."""
    if not address or address == "auto":  # "auto": Ray finds a local cluster and its token itself
        return None
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise SpecError("--address", f"nothing answers at {address} ({err.strerror or err}): start the "
                                     f"head there with `ray start --head --port {port}`, or check the "
                                     f"address") from None
    turned_on = None
    if environ.get(AUTH_MODE) is None and token_available(environ):
        environ[AUTH_MODE] = "token"
        turned_on = (f"{AUTH_MODE}=token (this machine has a Ray token: {TOKEN_SOURCES}), "
                     f"to join {address}")
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE, f"{host}:{port}"], env=dict(environ),
                               capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise SpecError("--address", f"{address} accepts connections but no Ray head answered in 60 s: "
                                     f"is it the head's --port (default 6379)?") from None
    said = probe.stdout.strip()
    if probe.returncode == 0:
        return turned_on
    if said.startswith("AuthenticationError"):
        mode = environ.get(AUTH_MODE)
        if mode and mode.lower() == "token":
            fix = (f"this machine's token ({TOKEN_SOURCES}) is not the cluster's: use the head's "
                   f"(`ray get-auth-token` on the head prints it)")
        else:
            fix = (f"copy the head's token (`ray get-auth-token` on the head) to ~/.ray/auth_token or "
                   f"RAY_AUTH_TOKEN here, and set {AUTH_MODE}=token"
                   + (f" (it is {mode!r} here)" if mode else ""))
        raise SpecError("--address", f"the Ray cluster at {address} uses token authentication and "
                                     f"refused this machine: {fix}")
    if said.startswith(("ModuleNotFoundError", "ImportError")):
        raise SpecError("--launcher ray", f"Ray is not installed here: pip install 'gradzoo[cluster]' ({said})")
    raise SpecError("--address", f"could not join the Ray cluster at {address}: {said or probe.stderr.strip()[-300:]}")
