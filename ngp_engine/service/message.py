"""The base of every protocol message and the strict JSON-lines parser (see protocol.py
for the messages themselves). Standard library only: the add-on imports it inside Blender."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from ..schema import ConfigError, clip, from_dict

MAX_LINE_BYTES = 1 << 20            # longer lines are refused (with an error event), not read


class ProtocolError(ValueError):
    """A line that is not a valid message; the text names the field and the problem."""


@dataclass(frozen=True)
class Message:
    """Base of every message: `type` is the JSON tag of the concrete class."""

    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        """One line of JSON, no NaN or infinity (they are not JSON)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def _no_constants(name: str) -> Any:
    raise ProtocolError(f"{name} is not a JSON number")


def parse(line: str | bytes, registry: dict[str, type[Message]]) -> Message:
    """One JSON line -> the message it holds; ProtocolError naming the problem otherwise."""
    if isinstance(line, bytes):
        if len(line) > MAX_LINE_BYTES:
            raise ProtocolError(f"line of {len(line)} bytes is longer than {MAX_LINE_BYTES}")
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"line is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(line, parse_constant=_no_constants)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"line is not JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise ProtocolError("line is nested too deeply") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"expected a JSON object, got {type(data).__name__}")
    if "type" not in data:
        raise ProtocolError("type: missing (every message names its type)")
    kind = data.pop("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"type: expected a string, got {clip(repr(kind))}")
    cls = registry.get(kind)
    if cls is None:
        raise ProtocolError(f"type: {clip(repr(kind))} is not one of {', '.join(registry)}")
    try:
        msg = from_dict(cls, data, where=kind)
        _check_finite(msg.to_dict(), kind)
    except ConfigError as e:
        raise ProtocolError(str(e)) from None
    except RecursionError:
        raise ProtocolError(f"{kind}: value nested too deeply") from None
    return msg


def _check_finite(value: Any, where: str) -> None:
    """Free-form fields (config, info, summary) must hold JSON numbers only, too."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(f"{where}: {value} is not a JSON number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for v in value:
            _check_finite(v, where)
