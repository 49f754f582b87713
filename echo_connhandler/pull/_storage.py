"""Where a pull writes: a local path, or any fsspec URL (``file://``, ``s3://``, ...).

Two small classes with one interface: :class:`LocalStorage` (the standard library only) and
:class:`FsspecStorage` (the ``storage`` extra). An Airflow ``ObjectStoragePath`` (or any object
with ``fs`` and ``path`` attributes, as universal_pathlib's paths have) is used through its own
filesystem, so its connection's credentials apply. Every method blocks: the engine calls them
in a thread, never on the event loop.

Writes are atomic where it matters: a file is written under a temporary name next to it and
moved into place (``os.replace`` locally, ``fs.mv`` elsewhere), so a name never holds a partial
file.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["FsspecStorage", "LocalStorage", "Storage", "storage_for"]


class Storage(abc.ABC):
    """The operations a pull needs, on one filesystem; paths are strings."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool: ...

    @abc.abstractmethod
    def size(self, path: str) -> int:
        """The size of the file ``path`` in bytes."""

    @abc.abstractmethod
    def list_names(self, folder: str) -> list[str]:
        """The names of the files in ``folder`` (none when it does not exist)."""

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    @abc.abstractmethod
    def open_read(self, path: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    @abc.abstractmethod
    def open_write(self, path: str) -> contextlib.AbstractContextManager[BinaryIO]: ...

    @abc.abstractmethod
    def move(self, source: str, target: str) -> None: ...

    @abc.abstractmethod
    def makedirs(self, path: str) -> None: ...

    @abc.abstractmethod
    def remove_tree(self, path: str) -> None: ...

    @abc.abstractmethod
    def remove(self, path: str) -> None: ...

    def join(self, folder: str, name: str) -> str:
        return f"{folder.rstrip('/')}/{name}"

    def parent(self, path: str) -> str:
        return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else "."

    def url(self, path: str) -> str:
        """How the summary names ``path``."""
        return path

    def check_output(self, path: str, *, folder: bool) -> None:  # noqa: B027
        """Refuse, before any request, an output this storage cannot write: by default nothing
        is checked (object stores have no folders to be in the way)."""

    def sibling(self, path: str, suffix: str, *, keep: int = 120) -> str:
        """A name next to ``path``: its name (the first ``keep`` characters, then a short hash
        of the rest when longer) followed by ``suffix``, so that a long output name never makes
        a temporary or checkpoint name exceed the file system's limit (255 bytes)."""
        head, _, name = path.rstrip("/").rpartition("/")
        if len(name.encode("utf-8")) > keep:
            digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
            name = name.encode("utf-8")[:keep].decode("utf-8", "ignore") + "~" + digest
        return f"{head}/{name}{suffix}" if head else f"{name}{suffix}"

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` through a temporary name: never a partial file there."""
        temporary = self.sibling(path, f".tmp-{uuid.uuid4().hex[:8]}")
        try:
            with self.open_write(temporary) as out:
                out.write(data)
            self.move(temporary, path)
        except BaseException:
            if self.exists(temporary):
                self.remove(temporary)
            raise


class LocalStorage(Storage):
    """A local disk (or a shared volume mounted on every worker and triggerer)."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def list_names(self, folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    @contextmanager
    def open_read(self, path: str) -> Iterator[BinaryIO]:
        with open(path, "rb") as handle:
            yield handle

    @contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        with open(path, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())

    def move(self, source: str, target: str) -> None:
        os.replace(source, target)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def remove(self, path: str) -> None:
        with_missing_ok = Path(path)
        with_missing_ok.unlink(missing_ok=True)

    def join(self, folder: str, name: str) -> str:
        return os.path.join(folder, name)

    def parent(self, path: str) -> str:
        return os.path.dirname(os.path.abspath(path))

    def url(self, path: str) -> str:
        return os.path.abspath(path)

    def check_output(self, path: str, *, folder: bool) -> None:
        """A file output must not be a folder, a folder output must not be a file, and the
        nearest existing parent must be a folder (missing parents are created)."""
        shown = os.path.abspath(path)
        if folder and os.path.exists(path) and not os.path.isdir(path):
            raise NotADirectoryError(
                f"output {shown!r} is a file: a pull of files writes them into a folder; "
                "give a folder (missing folders are created)"
            )
        if not folder and os.path.isdir(path):
            raise IsADirectoryError(
                f"output {shown!r} is a folder: a pull of rows writes one file; give a file "
                "name such as .../name.parquet"
            )
        parent = os.path.dirname(shown)
        while not os.path.exists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise NotADirectoryError(
                f"output {shown!r} cannot be written: {parent!r} is a file, not a folder"
            )


class FsspecStorage(Storage):
    """Any fsspec filesystem (S3, GCS, ADLS, memory, ...)."""

    def __init__(self, fs: Any, protocol: str | None = None) -> None:
        self.fs = fs
        self.protocol = protocol

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def list_names(self, folder: str) -> list[str]:
        try:
            entries = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    @contextmanager
    def open_read(self, path: str) -> Iterator[BinaryIO]:
        with self.fs.open(path, "rb") as handle:
            yield handle

    @contextmanager
    def open_write(self, path: str) -> Iterator[BinaryIO]:
        with self.fs.open(path, "wb") as handle:
            yield handle

    def move(self, source: str, target: str) -> None:
        self.fs.mv(source, target)

    def makedirs(self, path: str) -> None:
        self.fs.makedirs(path, exist_ok=True)

    def remove_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def remove(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path)

    def url(self, path: str) -> str:
        protocol = self.protocol or ""
        return f"{protocol}://{path}" if protocol and "://" not in path else path


def storage_for(output: Any) -> tuple[Storage, str]:
    """The storage and the path within it for ``output``: a local path, an fsspec URL, or a
    path object with ``fs`` and ``path`` (Airflow's ``ObjectStoragePath``)."""
    fs = getattr(output, "fs", None)
    if fs is not None and hasattr(output, "path"):
        protocol = getattr(output, "protocol", None)
        return FsspecStorage(fs, protocol if isinstance(protocol, str) else None), str(output.path)
    text = os.fspath(output) if isinstance(output, os.PathLike) else output
    if not isinstance(text, str) or not text:
        raise ValueError(f"output must be a path or a URL, got {output!r}")
    if "://" not in text or text.startswith("file://"):
        local = text.removeprefix("file://")
        return LocalStorage(), local
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise ImportError(
            f"writing to {text.split('://')[0]}:// needs fsspec: "
            "pip install 'echo-connhandler-provider[storage]'"
        ) from exc
    filesystem, path = url_to_fs(text)
    protocol = filesystem.protocol
    return FsspecStorage(filesystem, protocol[0] if isinstance(protocol, tuple) else protocol), path
