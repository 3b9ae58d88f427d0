"""The design's severities in order (LOW monitor, MEDIUM investigate, HIGH retrain soon,
CRITICAL immediate) and how they compare: one definition for every part.

>>> at_least("HIGH", "MEDIUM"), at_least("LOW", "MEDIUM")
(True, False)
"""

from __future__ import annotations

from typing import Literal

Severity = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
SEVERITIES: tuple[Severity, ...] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
ORDER = ("NONE", *SEVERITIES)  # NONE: nothing fired (the design's batch answer)


def at_least(severity: str, minimum: str) -> bool:
    return ORDER.index(severity) >= ORDER.index(minimum)
