"""Resource requests against what workers offer: the one place the fit check lives.

distributed leaves a task whose ``resources={"GPU": 2}`` no worker has in ``no-worker``
for ever; its docs say to validate requests before submitting. Flows check each traced
task's request, sweeps check what one trial holds; both ask :func:`unmet` and word the
error with :func:`describe`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["describe", "fits", "unmet"]

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
