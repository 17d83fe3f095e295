"""The pipeline's session-table part: ENIs bound to store slots, upkeep, counters (pure).

``pipeline.Pipeline`` keeps its sessions in a ``store.SessionStore`` (a table file
that outlives the process, or anonymous memory).  ``TablePath`` is the pipeline's
part that ties the two together (``pipeline.Pipeline`` and the NAT gateway's inherit it):

* ``Enis``, the pipeline's ``enis`` mapping: putting an ENI in binds it to its slot
  of the store (the slot it had before a restart, found by the ENI's id, else a free
  one): the ENI's ``table`` becomes that slot's view, its ``ports`` the slot's port
  allocators (rebuilt from the records on attach; the ENI's port range applied) and
  its counters continue from the table's.  Taking an ENI out frees its sessions.
  ``prune`` frees the slots of ENIs a snapshot no longer has (after a restart, those
  of ENIs absent from the first snapshot).
* ``rebind_session``: what a session read back from a record needs of the living objects:
  the environment (by its address: ``Envs``, the pipeline's ``envs`` mapping, keeps an
  index; a discarding stand-in if it is gone) and the next hop (from the ENI's subnet).
* ``maintain`` (from ``tick``): the expiry hand looks at ``REAP_PER_TICK`` records,
  and every ``FLUSH_INTERVAL`` seconds the cached sessions' counters, expiry and ACK
  fields and all counters (global and per ENI) are written to the table, so after a
  crash counters continue from at most that long ago.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from hyperplane.dataplane.hop import Hop
from hyperplane.dataplane.ports import EnvPort

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session
    from hyperplane.dataplane.ports import EniPort
    from hyperplane.dataplane.store import SessionStore

FLUSH_INTERVAL = 1.0
REAP_PER_TICK = 256
REAP_AT_LIMIT = 64
TABLE_COUNTERS = ("restarts", "attached_sessions", "attach_repaired", "attach_dropped")
NOWHERE = "0.0.0.0"
NO_MAC = "00:00:00:00:00:00"


class Enis(dict):
    """ENIs by id; putting one in binds it to the store, taking it out frees its sessions."""

    def __init__(self, owner: TablePath) -> None:
        super().__init__()
        self.owner = owner

    def __setitem__(self, key: str, eni: EniPort) -> None:
        old = self.get(key)
        if old is eni:
            return
        if old is not None:
            self.owner.unbind(old)
        super().__setitem__(key, eni)
        self.owner.bind(eni)

    def __delitem__(self, key: str) -> None:
        eni = self[key]
        super().__delitem__(key)
        self.owner.unbind(eni)

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        eni = super().pop(key)
        self.owner.unbind(eni)
        return eni


class Envs(dict):
    """Environment links by name, and by address (``by_ip``) for sessions read back."""

    def __init__(self) -> None:
        super().__init__()
        self.by_ip: dict[bytes, EnvPort] = {}

    def __setitem__(self, key: str, env: EnvPort) -> None:
        old = self.get(key)
        if old is not None and self.by_ip.get(old.ip_bytes) is old:
            del self.by_ip[old.ip_bytes]
        super().__setitem__(key, env)
        self.by_ip[env.ip_bytes] = env

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        env = super().pop(key)
        if self.by_ip.get(env.ip_bytes) is env:
            del self.by_ip[env.ip_bytes]
        return env


class TablePath(Hop):
    """Sessions in the store: binding, resolving, upkeep (mixed into the pipeline)."""

    store: SessionStore
    envs: Envs

    def init_tables(self, store: SessionStore) -> None:
        self.store = store
        self.nowhere = EnvPort("-", NOWHERE, NO_MAC, NOWHERE, NO_MAC, None)
        self.next_flush = 0.0
        self.counters.update(dict.fromkeys(TABLE_COUNTERS, 0))
        self.counters.update(store.read_counters(None))
        if store.generation > 1:  # attached to a table an earlier process wrote
            self.counters["restarts"] += 1
            self.counters["attached_sessions"] = store.attached
            self.counters["attach_repaired"] += store.repaired
            self.counters["attach_dropped"] += store.dropped

    # -- ENIs -------------------------------------------------------------------------------
    def bind(self, eni: EniPort) -> None:
        state = self.store.bind(eni.id, eni.table, partial(self.rebind_session, eni), eni.ports)
        eni.ports = state.ports
        eni.ports.set_range(eni.port_range)
        for name, value in self.store.read_counters(eni.table.slot).items():
            if name not in ("sessions_created", "sessions_active"):
                eni.counters[name] = value

    def unbind(self, eni: EniPort) -> None:
        self.store.unbind(eni.id)

    def prune(self) -> int:
        """Free the slots (and sessions) of ENIs no longer in ``enis``."""
        return self.store.prune(set(self.enis))

    def rebind_session(self, eni: EniPort, s: Session) -> None:
        s.env = self.envs.by_ip.get(s.env_ip, self.nowhere)
        remote = s.remote_ip  # ``eni.nexthop``, inline: this is the cache-miss path
        s.nexthop = remote if int.from_bytes(remote, "big") & eni.mask == eni.net \
            else eni.gateway_bytes

    # -- upkeep -----------------------------------------------------------------------------
    def reap(self, now: float, budget: int = 2) -> int:
        freed = self.store.reap(now, budget)
        if freed:
            self.counters["sessions_expired"] += freed
        return freed

    def maintain(self, now: float) -> None:
        self.reap(now, REAP_PER_TICK)
        if now >= self.next_flush:
            self.next_flush = now + FLUSH_INTERVAL
            self.flush()

    def flush(self) -> None:
        """Cached sessions and counters written to the table."""
        store = self.store
        store.flush()
        store.write_counters(None, self.counters)
        for eni in self.enis.values():
            if eni.table.store is store:
                store.write_counters(eni.table.slot, dict(
                    eni.counters, sessions_created=eni.table.created,
                    sessions_active=len(eni.table)))

    def close_tables(self) -> None:
        """A clean stop: everything written, the table marked clean, unmapped."""
        self.flush()
        self.store.close()
