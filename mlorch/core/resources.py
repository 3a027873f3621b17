"""Resource requests (``{"GPU": 1}``): the one place they are checked and fitted to workers.

A request is validated once, where it is made (:func:`parse_request`: ``@mo.task``'s
``resources=``, ``mo.sweep``'s). distributed leaves a task whose ``resources={"GPU": 2}``
no worker has in ``no-worker`` for ever; its docs say to validate requests before
submitting. Flows check each traced task's request, sweeps check what one trial holds;
both ask :func:`unmet` and word the error with :func:`describe`. What workers offer is
read from the cluster (``ClusterHandle.offers()``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlorch.errors import preview

__all__ = ["describe", "fits", "parse_request", "unmet"]

Request = Iterable[tuple[str, float]]


def fits(offer: Mapping[str, float], request: Request) -> bool:
    """True if one worker offering ``offer`` can run a task asking for ``request``."""
    return all(offer.get(name, 0) >= amount for name, amount in request)


def unmet(offers: Sequence[Mapping[str, float]], request: Request) -> bool:
    """True if no worker can ever meet ``request``."""
    items = list(request)
    return not any(fits(offer, items) for offer in offers)


def describe(offers: Sequence[Mapping[str, float]]) -> str:
    """What the workers offer, for an error message (``GPU=1, memory=...`` or ``none``)."""
    return ", ".join(sorted({f"{k}={v:g}" for o in offers for k, v in o.items()})) or "none"


def parse_request(resources: Any) -> dict[str, float]:
    """``{"GPU": 1}`` as floats; ValueError naming the entry unless every amount is a positive finite number."""
    if not isinstance(resources, Mapping):
        raise ValueError(f"expected a mapping like {{'GPU': 1}}, got {type(resources).__name__} {preview(resources)}")
    out: dict[str, float] = {}
    for key, amount in resources.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"resource names must be non-empty strings, got {preview(key)}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount <= 0:
            raise ValueError(f"['{key:.80}']: expected a positive number, got {preview(amount)}")
        out[key] = float(amount)
    return out
