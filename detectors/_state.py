"""Safe (pickle-free) packing of nested state into bytes.

State is a nested structure of dicts, lists, strings, numbers, ``None`` and numpy
arrays. Arrays go into an ``.npz`` archive; everything else into a JSON header that
refers to the arrays by key. ``allow_pickle=False`` keeps ``from_bytes`` safe on
untrusted input.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from .errors import StateError

_MAGIC = "driftline-state-v1"


def pack(kind: str, obj: Any) -> bytes:
    """Serialise ``obj`` tagged with ``kind`` to bytes."""
    arrays: dict[str, np.ndarray] = {}

    def enc(x: Any) -> Any:
        if isinstance(x, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = x
            return {"__nd__": key}
        if isinstance(x, dict):
            return {"__dict__": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [enc(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x

    header = json.dumps({"magic": _MAGIC, "kind": kind, "body": enc(obj)})
    arrays["__header__"] = np.frombuffer(header.encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(kind: str, data: bytes) -> Any:
    """Inverse of :func:`pack`; raises :class:`StateError` on foreign bytes."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("__header__").tobytes().decode())
    except Exception as exc:  # any decoding failure means unusable bytes
        raise StateError(f"cannot read saved state: {exc}") from exc
    if header.get("magic") != _MAGIC or header.get("kind") != kind:
        raise StateError(f"saved state is not a {kind!r} (got {header.get('kind')!r})")

    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if "__nd__" in x:
                return arrays[x["__nd__"]]
            return {dec(k): dec(v) for k, v in x["__dict__"]}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(header["body"])
