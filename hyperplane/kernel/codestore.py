"""Function code on disk: deployment packages unzipped into the state directory (side effects).

``store_zip(name, data)`` is what Lambda does with ``Code.ZipFile``: the package is
checked, then unzipped into ``STATE_DIR/code/<function>/<sha>/`` (a fresh directory
per package, so environments of the old code keep theirs while they retire), and
its ``CodeSha256`` (base64 of the SHA-256 of the zip, as AWS computes it) and size
are returned.  A package is refused, with AWS's ``InvalidParameterValueException``,
when it is not a zip, when an entry would land outside its directory (``../``, an
absolute path, a link), or when it unzips to more than Lambda's 250 MB; every limit
is checked before a byte is written, and the bytes written are counted again while
writing (a lying header cannot pass).  Executable bits are kept (a ``bootstrap``).

``digest_dir(path)`` gives a code directory (the topology file's, the CLI's) the same
two figures, computed over its files in order.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import stat
import zipfile
from pathlib import Path

from hyperplane.errors import ApiError
from hyperplane.kernel import state

MAX_UNZIPPED = 262_144_000   # Lambda's limit for a function's unzipped code
MAX_ENTRIES = 20_000
CHUNK = 1 << 20
BAD_ZIP = "Could not unzip uploaded file. Please check your file, then try to upload again."


def _refuse(reason: str) -> ApiError:
    return ApiError("InvalidParameterValueException", f"{BAD_ZIP} ({reason})")


def _safe_name(name: str) -> str:
    path = Path(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or ".." in path.parts or \
            "\\" in name or "\x00" in name:
        raise _refuse(f"the entry {name[:100]!r} would land outside the function's "
                      "directory")
    return name


def _check(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise _refuse(f"more than {MAX_ENTRIES} entries")
    total = 0
    for info in entries:
        _safe_name(info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(f"the entry {info.filename[:100]!r} is a link")
        total += info.file_size
    if total > MAX_UNZIPPED:
        raise ApiError("InvalidParameterValueException",
                       f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")
    return entries


def _extract(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], into: Path) -> None:
    written = 0
    for info in entries:
        target = into / _safe_name(info.filename)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as src, open(target, "wb") as dst:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                if written > MAX_UNZIPPED:
                    raise ApiError("InvalidParameterValueException",
                                   f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")
                dst.write(chunk)
        mode = (info.external_attr >> 16) & 0o777
        os.chmod(target, (mode or 0o644) | 0o400)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def store_zip(function: str, data: bytes) -> tuple[str, str, int]:
    """Unzip a deployment package for ``function``: (its directory, CodeSha256, size)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = _check(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise _refuse(str(exc)[:200]) from None
    digest = sha256_b64(data)
    tag = hashlib.sha256(data).hexdigest()[:16]
    final = state.path("code", function, tag)
    if final.is_dir():
        return str(final), digest, len(data)
    partial = state.path("code", function, f".{tag}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        _extract(archive, entries, partial)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise _refuse(str(exc)[:200]) from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(final)
    return str(final), digest, len(data)


def digest_dir(path: str, limit: int = MAX_UNZIPPED) -> tuple[str, int]:
    """(CodeSha256, size) of a code directory: its files' paths and bytes, in order."""
    digest, size = hashlib.sha256(), 0
    for root, dirs, files in os.walk(path):
        dirs.sort()
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            file = Path(root, name)
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            try:
                with open(file, "rb") as fh:
                    while (chunk := fh.read(CHUNK)) and size <= limit:
                        size += len(chunk)
                        digest.update(chunk)
            except OSError:
                continue
    return base64.b64encode(digest.digest()).decode(), size


def forget(function: str) -> None:
    """A deleted function's packages."""
    shutil.rmtree(state.path("code", function), ignore_errors=True)
