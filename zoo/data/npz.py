"""Reading a user's ``.npz`` safely: every member's ``.npy`` header first, without loading it, and
no array loaded that the file or the memory cannot hold.

A header is text the file's writer chose: ``numpy.load`` trusts its shape for the allocation (a
header claiming 1e11 rows over 64 bytes of data asked for 2.91 TiB: ``ArrayMemoryError``), and
a garbled one escapes as ``tokenize.TokenError`` or ``SyntaxError`` from numpy's parser. Here
each member's header is read with numpy's own ``numpy.lib.format.read_magic`` and
``read_array_header_1_0`` / ``_2_0`` (NEP 1), every error is one line naming the member, and the
shape is checked against the bytes the member holds (its uncompressed size in the zip's
directory, less the header) before anything is loaded; :func:`check_memory` then checks what
a caller will load against the memory available now (zoo.config.budget). Nothing is unpickled.
"""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from zoo.config.budget import available_bytes, human
from zoo.errors import InputError

NPY_MAGIC = b"\x93NUMPY"
HEADER_LIMIT = 10000  # numpy's own max_header_size


class NpzError(InputError):
    """An ``.npz`` that cannot be read as asked; one line naming the file and the member."""


@dataclass(frozen=True)
class Member:
    """One array as its header describes it, and what its member holds."""
    key: str                  # the name numpy.savez gave it (without ``.npy``)
    shape: tuple[int, ...]
    dtype: np.dtype
    stored: int               # bytes of data after the header (the member's uncompressed size)

    @property
    def nbytes(self) -> int:
        """What loading it allocates, as the header says."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        return f"[{', '.join(map(str, self.shape))}] {self.dtype}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:160]}" if text else type(err).__name__


def member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    """One member's header, read without its data; raises NpzError (naming the member, not the
    file) for a header that cannot be read or that claims more data than the member holds."""
    key = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as fp:
            version = npy.read_magic(fp)
            # 3.0 differs from 2.0 only in the header's encoding (utf-8), which numeric dtypes never need
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(fp, max_header_size=HEADER_LIMIT)
            offset = fp.tell()
    except zipfile.BadZipFile as err:  # the member's bytes are damaged (its CRC, checked once read whole)
        raise NpzError(f"cannot read {key} ({str(err).splitlines()[0][:160]})") from None
    except Exception as err:  # numpy's parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise NpzError(f"the .npy header of {key} cannot be read ({_first_line(err)})") from None
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise NpzError(f"the .npy header of {key} has shape {shape!r}, not a shape")
    member = Member(key, tuple(shape), dtype, max(0, info.file_size - offset))
    if member.nbytes > member.stored and not dtype.hasobject:  # (objects are pickled: never loaded)
        raise NpzError(f"the header of {key} claims {member.describe()} ({human(member.nbytes)}) but the "
                       f"member holds {human(member.stored)} of data: the file is damaged or was not written "
                       f"by numpy.savez")
    return member


def read_headers(path) -> dict[str, Member]:
    """Every array member's header, read without loading any data; raises NpzError for a file
    that is missing, a folder, not a zip (a single ``.npy`` is named as such), or a member whose
    header cannot be read or claims more data than the member holds (:func:`member_header`)."""
    path = Path(path)
    if not path.exists():
        raise NpzError(f"{path}: no such file")
    if path.is_dir():
        raise NpzError(f"{path}: is a folder, not an .npz file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        try:
            with open(path, "rb") as f:
                single = f.read(len(NPY_MAGIC)) == NPY_MAGIC
        except OSError:
            single = False
        what = "a single .npy array, not an .npz archive" if single else f"not a readable .npz archive ({_first_line(err)})"
        raise NpzError(f"{path}: {what}") from None
    with archive:
        try:
            infos = archive.infolist()
        except Exception as err:
            raise NpzError(f"{path}: not a readable .npz archive ({_first_line(err)})") from None
        members = {}
        for info in infos:
            if info.filename.endswith(".npy") and not info.is_dir():
                try:
                    member = member_header(archive, info)
                except NpzError as err:
                    raise NpzError(f"{path}: {err}") from None
                members[member.key] = member
        return members


def check_memory(path, members: list[Member], copies: float = 1.0) -> None:
    """Loading ``members`` (``copies`` times their size: a float32 copy, a standardized one) fits
    in the memory available now; raises NpzError naming the largest."""
    need = int(sum(m.nbytes for m in members) * copies)
    have = available_bytes()
    if have is not None and need > have:
        top = max(members, key=lambda m: m.nbytes)
        raise NpzError(f"{path}: loading its arrays needs about {human(need)} of memory but {human(have)} is "
                       f"available; the largest is {top.key} ({top.describe()}, {human(top.nbytes)})")


def load(path, key: str) -> np.ndarray:
    """One member's values, after its header was checked (never unpickled); raises NpzError
    ("cannot read KEY (why)", without the file's name) for data damaged past the header."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except Exception as err:  # a CRC error, data cut short, an object array
        text = str(err).strip()
        raise NpzError(f"cannot read {key} ({text.splitlines()[0][:160] if text else type(err).__name__})") from None
