"""Hashes, verified reads and the download cache: a weights file is used only when its bytes
hash to what the manifest says. No TensorFlow here.

``read_verified`` returns the bytes it hashed, so the file loaded is exactly the file checked (a
file replaced between the check and the load cannot slip through). ``fetch`` downloads the way
``keras.utils.get_file`` does (into a cache, hash-checked, reused while it still verifies), with
the standard library so ``file://`` URLs work the same as ``https://``: into ``$GRADZOO_CACHE``
or ``~/.cache/gradzoo``, through a temporary file renamed into place only once its hash is right,
so a crash or a wrong download never leaves a file that looks finished.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class IntegrityError(RuntimeError):
    """A weights file that is not the one the manifest names (modified, truncated, replaced)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path, expected: str, got: str, size: int | None, got_size: int) -> IntegrityError:
    sized = f" ({got_size} bytes, expected {size})" if size is not None and size != got_size else ""
    return IntegrityError(
        f"{path}: sha256 mismatch{sized}: expected {expected}, got {got}. The file was modified, "
        f"truncated or replaced; it was not loaded. Reinstall gradzoo, delete the cached copy, or "
        f"regenerate it with `zoo-pretrained train NAME`.")


def read_verified(path, sha256: str, size: int | None = None) -> bytes:
    """The file's bytes, if and only if they hash to ``sha256``; else IntegrityError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    data = path.read_bytes()
    got = sha256_bytes(data)
    if got != sha256:
        raise _mismatch(path, sha256, got, size, len(data))
    return data


def check_file(path, sha256: str, size: int | None = None) -> None:
    """Like read_verified without keeping the bytes (``zoo-pretrained verify``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    got = sha256_file(path)
    if got != sha256:
        raise _mismatch(path, sha256, got, size, path.stat().st_size)


def cache_dir() -> Path:
    """``$GRADZOO_CACHE``, else ``~/.cache/gradzoo``."""
    return Path(os.environ.get("GRADZOO_CACHE") or Path.home() / ".cache" / "gradzoo")


def cached_path(file_name: str) -> Path:
    return cache_dir() / "pretrained" / file_name


def fetch(url: str, file_name: str, sha256: str, size: int | None = None, timeout: float = 60.0) -> Path:
    """The cached copy of ``url`` as ``file_name``, downloaded first if missing or no longer
    verifying. A download whose hash is wrong is deleted and refused (IntegrityError)."""
    target = cached_path(file_name)
    if target.is_file():
        if sha256_file(target) == sha256:
            return target
        target.unlink()  # a stale or damaged copy: fetch it again
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".part", dir=target.parent)
    digest, got_size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                digest.update(chunk)
                got_size += len(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise _mismatch(url, sha256, digest.hexdigest(), size, got_size)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
