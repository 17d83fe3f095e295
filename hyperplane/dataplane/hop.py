"""What the pipeline's parts share: the router hop they are part of (pure).

``Pipeline`` is assembled from parts, each in the module of its subject
(``arp.Neighbour``, ``icmp.ErrorPath``, ``fragments.FragmentPath``).  ``Hop`` is
their common base: it names what a part may use of the whole (the ENI ports,
the counters, dropping under a named reason, sending toward an environment or the
VPC), which ``pipeline.Pipeline`` provides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session
    from hyperplane.dataplane.ports import EniPort


class Hop:
    enis: dict[str, EniPort]
    counters: dict[str, int]

    if TYPE_CHECKING:
        def drop(self, reason: str, eni: EniPort | None = None, count: int = 1) -> None: ...
        def to_env(self, s: Session, buf: bytearray, length: int) -> None: ...
        def to_vpc(self, eni: EniPort, nexthop: bytes, buf: bytearray, length: int,
                   now: float, split: bool = False) -> None: ...
