"""Control-plane timing, quotas and the networking mode from ``settings:`` (pure).

The model.  How long the control plane takes for what AWS does slowly, in seconds:

    eni_create         creating a Hyperplane ENI (the function is Pending meanwhile)
    eni_delete         deleting an ENI no function uses any more
    function_idle      a function not invoked this long goes Inactive (reason Idle)
    env_idle           an idle execution environment is reaped after this
    legacy_eni_attach  legacy networking: creating and attaching an ENI at a cold start
    env_max_lifetime   an execution environment is recycled after this, even when busy
                       (AWS recycles environments every few hours; a busy one goes once
                       its invocation is over); picked per environment

Each is a *span* ``(low, high)``: a fixed duration has ``low == high``; a range is picked
per object (per ENI, per environment) with ``Timing.pick(key, seed)``, a deterministic
value from the SHA-256 of the key and the seed, so a run can be replayed.  A *profile*
gives every key a default: ``fast`` (the default; a test suite's pace) or ``aws`` (what
AWS documents and users observe).  Keys given in ``settings.timing`` override the
profile's, each as a duration (see ``durations``) or a ``[MIN, MAX]`` list; ``null``, like
an absent key, means the profile's.

``quotas.enis_per_vpc`` caps the Lambda ENIs of one VPC (default 250; AWS documents 250
and, for some accounts, 500).  ``networking`` is the default mode of every function:
``hyperplane`` (shared ENIs, the post-2019 model) or ``legacy`` (one ENI per execution
environment); a function's own ``networking:`` wins (``networking(declared, settings)``).

Division of labour: ``settings.check`` validates the section and names the field in a
``TopologyError``; this module turns checked settings into values (``span`` raises a plain
``ValueError`` that ``settings`` wraps).  It never sleeps or reads a clock: the controller
does, with these numbers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields

from hyperplane.model import durations

Span = tuple[float, float]

KEYS = ("eni_create", "eni_delete", "function_idle", "env_idle", "legacy_eni_attach",
        "env_max_lifetime")
PROFILES: dict[str, dict[str, str | tuple[str, str]]] = {
    "fast": {"eni_create": "1s", "eni_delete": "3s", "function_idle": "14d",
             "env_idle": "5m", "legacy_eni_attach": "1s", "env_max_lifetime": "2h"},
    "aws": {"eni_create": ("60s", "90s"), "eni_delete": ("1m", "20m"), "function_idle": "14d",
            "env_idle": ("5m", "15m"), "legacy_eni_attach": "10s",
            "env_max_lifetime": ("2h", "4h")},
}
DEFAULT_PROFILE = "fast"
NETWORKING_MODES = ("hyperplane", "legacy")
DEFAULT_NETWORKING = "hyperplane"
DEFAULT_ENIS_PER_VPC = 250
RANGE_HINT = "or a [MIN, MAX] range"


@dataclass(frozen=True)
class Timing:
    """Every key's span in seconds, and the profile they started from."""

    profile: str
    eni_create: Span
    eni_delete: Span
    function_idle: Span
    env_idle: Span
    legacy_eni_attach: Span
    env_max_lifetime: Span

    def span(self, key: str) -> Span:
        if key not in KEYS:
            raise ValueError(f"unknown timing key {key!r} (known: {', '.join(KEYS)})")
        return getattr(self, key)

    def pick(self, key: str, seed: str) -> float:
        """A value in the key's span, the same for the same seed (e.g. an ENI id)."""
        low, high = self.span(key)
        if low == high:
            return low
        digest = hashlib.sha256(f"{key}\0{seed}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2.0**64  # in [0, 1)
        return min(high, low + (high - low) * fraction)

    def summary(self) -> dict[str, str]:
        """For status output: ``{"profile": "aws", "eni_create": "60s..90s", ...}``."""
        spans = {f.name: span_text(getattr(self, f.name)) for f in fields(self)
                 if f.name != "profile"}
        return {"profile": self.profile, **spans}


def span(value: object) -> Span:
    """A duration or a ``[MIN, MAX]`` list of two durations as ``(low, high)`` seconds."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{durations.EXAMPLE} {RANGE_HINT}; got a list of "
                             f"{len(value)} item(s)")
        low, high = (_element(item, name) for item, name in zip(value, ("MIN", "MAX"),
                                                                  strict=True))
        if low > high:
            raise ValueError(f"range [{value[0]}, {value[1]}] is reversed (MIN must be "
                             "<= MAX)")
        return (low, high)
    try:
        seconds = durations.parse(value)
    except ValueError as exc:
        reason = str(exc).replace(durations.EXAMPLE, f"{durations.EXAMPLE} {RANGE_HINT}", 1)
        raise ValueError(reason) from None
    return (seconds, seconds)


def _element(item: object, name: str) -> float:
    try:
        return durations.parse(item)
    except ValueError as exc:
        raise ValueError(f"{name} of the range: {exc}") from None


def span_text(value: Span) -> str:
    low, high = value
    if low == high:
        return durations.text(low)
    return f"{durations.text(low)}..{durations.text(high)}"


def timing(settings: dict) -> Timing:
    """The ``settings.timing`` section with its profile's defaults (checked settings)."""
    section = settings.get("timing") or {}
    profile = section.get("profile") or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise ValueError(f"unknown timing profile {profile!r} (known: {', '.join(PROFILES)})")
    overrides = {k: v for k, v in section.items() if k in KEYS and v is not None}
    given = {**PROFILES[profile], **overrides}
    return Timing(profile, **{key: span(given[key]) for key in KEYS})


def enis_per_vpc(settings: dict) -> int:
    """``settings.quotas.enis_per_vpc``: the Lambda ENIs one VPC may hold."""
    return (settings.get("quotas") or {}).get("enis_per_vpc") or DEFAULT_ENIS_PER_VPC


def default_networking(settings: dict) -> str:
    """``settings.networking``: the mode of functions that do not name one."""
    return settings.get("networking") or DEFAULT_NETWORKING


def networking(declared: str | None, settings: dict) -> str:
    """A function's mode: its own ``networking`` (``Function.networking``), else the file's."""
    return declared or default_networking(settings)
