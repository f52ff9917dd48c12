"""The service's input: JSON lines read from a raw file descriptor by a reader thread."""
from __future__ import annotations

import os
from typing import Any, Callable

from .message import MAX_LINE_BYTES


def read_lines(fd: int, put: Callable[[tuple[str, Any]], None]) -> None:
    """Reader thread: ("line", bytes) for each whole line, ("too_long", n bytes) for a line
    over MAX_LINE_BYTES (skipped to its end without being held in memory), ("eof", None)
    last. Reads the raw file descriptor: a daemon thread blocked inside a buffered reader
    would abort the interpreter at exit."""
    pending = bytearray()
    skipped = 0                        # > 0 while discarding an over-long line
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:
            chunk = b""
        if not chunk:
            if skipped:
                put(("too_long", skipped))
            elif pending:
                put(("line", bytes(pending)))
            put(("eof", None))
            return
        while chunk:
            nl = chunk.find(b"\n")
            part, chunk = (chunk, b"") if nl < 0 else (chunk[:nl + 1], chunk[nl + 1:])
            if skipped:
                skipped += len(part)
            else:
                pending += part
                if len(pending) > MAX_LINE_BYTES:
                    skipped, pending = len(pending), bytearray()
            if nl >= 0:
                if skipped:
                    put(("too_long", skipped))
                else:
                    put(("line", bytes(pending)))
                skipped, pending = 0, bytearray()
