"""The shared detector contract (River's shape, with a batch fast path)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._state import pack, unpack


class StreamDetector:
    """Base class: settings stored unchanged in ``__init__``, state made in ``_reset``.

    Subclasses list their changing attributes in ``_state_fields`` and their settings in
    ``_settings``; ``update_many(values)`` is the fast path and ``update(x)`` a batch of
    one. ``to_bytes``/``from_bytes`` round-trip settings and state exactly.
    """

    _state_fields: tuple[str, ...] = ()
    _settings: tuple[str, ...] = ()

    def _reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_many(self, values: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, x: Any) -> Any:
        """Process one event (a batch of one)."""
        return self.update_many(np.asarray(x, dtype=np.float64).reshape(1, -1))

    def get_state(self) -> dict[str, Any]:
        return {f: np.copy(v) if isinstance(v := getattr(self, f), np.ndarray) else v
                for f in self._state_fields}

    def set_state(self, state: dict[str, Any]) -> None:
        for f in self._state_fields:
            v = state[f]
            setattr(self, f, np.copy(v) if isinstance(v, np.ndarray) else v)

    def to_bytes(self) -> bytes:
        settings = {k: getattr(self, k) for k in self._settings}
        return pack(type(self).__name__, {"settings": settings, "state": self.get_state()})

    @classmethod
    def from_bytes(cls, data: bytes) -> "StreamDetector":
        body = unpack(cls.__name__, data)
        obj = cls(**body["settings"])
        obj.set_state(body["state"])
        return obj
