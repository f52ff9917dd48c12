"""Files through the protocol, both ends: the engine's answers to `file_info`, `put_file` and
`get_file`, and the checksums the client compares (standard library only: the add-on runs
the client inside Blender).

An upload grows `.<name>.part` beside its target: each chunk must land exactly at the end of
what is there (so a resumed upload can neither skip nor repeat bytes), and only a last chunk
whose SHA-256 of the whole file matches renames it into place. A dropped link leaves the part
file, never a half-written target; `file_info` reports it, with its checksum, so the client
resumes where it stopped.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Iterator

from ..errors import UserError
from .protocol import FILE_CHUNK_BYTES, FileChunk, FileState

_HASH_BLOCK = 1 << 20


def sha256_of(path: Path, length: int | None = None) -> str:
    """SHA-256 of the first `length` bytes of `path` (all of it when None)."""
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(_HASH_BLOCK if left is None else min(_HASH_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def part_path(path: Path) -> Path:
    """Where an unfinished upload of `path` grows (hidden, beside it)."""
    return path.with_name(f".{path.name}.part")


def file_state(path: Path, shown: str, request: str | None) -> FileState:
    part = part_path(path)
    exists = path.is_file()
    return FileState(path=shown, exists=exists, size=path.stat().st_size if exists else 0,
                     sha256=sha256_of(path) if exists else "",
                     part_size=part.stat().st_size if part.is_file() else 0,
                     part_sha256=sha256_of(part) if part.is_file() else "", request=request)


def decode(data: str, field: str = "data") -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{field}: not base64") from None
    if len(raw) > FILE_CHUNK_BYTES:
        raise UserError(f"{field}: {len(raw)} bytes, more than a chunk's {FILE_CHUNK_BYTES}")
    return raw


def put_chunk(path: Path, shown: str, offset: int, raw: bytes, last: bool, sha256: str | None) -> bool:
    """Write one upload chunk; True when it completed the file (renamed into place).
    UserError (naming the file) for a chunk out of place or a checksum that differs: the
    part file is then removed, so the client starts that file over."""
    if path.is_dir():
        raise UserError(f"put_file.path: {shown} is a folder")
    part = part_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if offset == 0 and have:
        part.unlink()
        have = 0
    if offset != have:
        raise UserError(f"put_file.offset: {offset} but the unfinished {shown} holds {have} bytes")
    with open(part, "ab") as f:
        f.write(raw)
    if not last:
        return False
    got = sha256_of(part)
    if got != sha256:
        part.unlink()
        raise UserError(f"put_file.sha256: {shown} arrived with checksum {got[:12]}..., not "
                        f"{(sha256 or '')[:12]}...: send it again")
    os.replace(part, path)
    return True


def chunks(path: Path, shown: str, offset: int, request: str | None) -> Iterator[FileChunk]:
    """The `file_chunk` events of a download of `path` from `offset`."""
    if not path.is_file():
        raise UserError(f"get_file.path: {shown} does not exist")
    with open(path, "rb") as f:               # one open file: a rewrite (atomic rename) meanwhile
        size = os.fstat(f.fileno()).st_size   # cannot mix two versions into one download
        if offset > size:
            raise UserError(f"get_file.offset: {offset} is past the end of {shown} ({size} bytes)")
        h = hashlib.sha256()
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            h.update(block)
        f.seek(offset)
        while True:
            raw = f.read(FILE_CHUNK_BYTES)
            last = offset + len(raw) >= size
            yield FileChunk(path=shown, offset=offset, data=base64.b64encode(raw).decode("ascii"),
                            size=size, last=last, sha256=h.hexdigest() if last else "", request=request)
            offset += len(raw)
            if last:
                return
