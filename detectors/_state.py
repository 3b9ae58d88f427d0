"""Safe (pickle-free) packing of nested state into bytes.

State is a nested structure of dicts, lists, strings, numbers, ``None`` and numpy
arrays. Everything but the arrays goes into a JSON header that refers to the arrays by
position; the arrays follow as their raw bytes (dtype and shape in the header). The
layout (format 2)::

    b"DLS2" | header length (uint32, little-endian) | header (UTF-8 JSON) | array bytes...

It replaced an ``.npz`` archive (format 1: a zip of ``.npy`` files, a few hundred
microseconds per state for the zip alone, paid per model per batch); bytes in format 1
are still read. No dtype holding Python objects is accepted, so ``unpack`` stays safe
on untrusted input, like ``np.load(allow_pickle=False)``.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np

from .errors import StateError

_MAGIC = "driftline-state-v1"  # the header's tag, in both formats
_PREFIX = b"DLS2"
_LENGTH = struct.Struct("<I")
_PLAIN = frozenset({str, int, float, bool, type(None)})


def pack(kind: str, obj: Any) -> bytes:
    """Serialise ``obj`` tagged with ``kind`` to bytes."""
    specs: list[list[Any]] = []
    chunks: list[bytes] = []

    def enc(x: Any) -> Any:
        if type(x) in _PLAIN:
            return x
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise TypeError("arrays of Python objects cannot be saved")
            specs.append([x.dtype.str, list(x.shape)])
            chunks.append(x.tobytes())  # C order
            return {"__nd__": len(specs) - 1}
        if isinstance(x, dict):
            return {"__dict__": [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [enc(v) for v in x]
        if isinstance(x, np.generic):
            return x.item()
        return x

    body = enc(obj)
    header = json.dumps({"magic": _MAGIC, "kind": kind, "arrays": specs, "body": body}).encode()
    return b"".join([_PREFIX, _LENGTH.pack(len(header)), header, *chunks])


def _read(data: bytes) -> tuple[dict[str, Any], dict[Any, np.ndarray]]:
    """The header and the arrays (by the key the body refers to them with)."""
    if data[:4] != _PREFIX:  # format 1: an .npz archive
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return json.loads(arrays.pop("__header__").tobytes().decode()), arrays
    (length,) = _LENGTH.unpack_from(data, 4)
    end = 8 + length
    if end > len(data):
        raise ValueError("header longer than the data")
    header = json.loads(bytes(data[8:end]).decode())
    arrays: dict[Any, np.ndarray] = {}
    view = memoryview(data)
    for i, (descr, shape) in enumerate(header.get("arrays", [])):
        dtype = np.dtype(descr)
        if dtype.hasobject:
            raise ValueError("an array of Python objects")
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError("negative array dimension")
        count = int(np.prod(shape, dtype=np.int64))
        size = count * dtype.itemsize
        if end + size > len(data):
            raise ValueError("array data shorter than its header says")
        # A copy: writable and aligned, independent of `data`.
        arrays[i] = np.frombuffer(view[end:end + size], dtype=dtype, count=count).reshape(shape).copy()
        end += size
    if end != len(data):
        raise ValueError("trailing bytes after the arrays")
    return header, arrays


def unpack(kind: str, data: bytes) -> Any:
    """Inverse of :func:`pack`; raises :class:`StateError` on foreign bytes."""
    try:
        header, arrays = _read(data)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except Exception as exc:  # any decoding failure means unusable bytes
        raise StateError(f"cannot read saved state: {exc}") from exc
    if header.get("magic") != _MAGIC or header.get("kind") != kind:
        raise StateError(f"saved state is not a {kind!r} (got {header.get('kind')!r})")

    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if "__nd__" in x:
                try:
                    return arrays[x["__nd__"]]
                except (KeyError, TypeError):
                    raise StateError(f"saved state refers to a missing array {x['__nd__']!r}") from None
            return {dec(k): dec(v) for k, v in x["__dict__"]}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(header.get("body"))
