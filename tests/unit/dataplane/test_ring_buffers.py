"""The pipeline on frames read in place from a receive ring's slots (``ring.RxRing``).

The ring hands ``Pipeline.receive`` a ``memoryview`` of an mmap'd slot (from the
virtio-net header to the slot's end, stale bytes after the frame) instead of a
``bytearray``: the same frames must give byte-identical output frames, the same
counters and the same sessions either way.
"""

from __future__ import annotations

import mmap
import random
from types import SimpleNamespace
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperplane.dataplane import portalloc, ring
from tests.unit.dataplane.frames import Rig
from tests.unit.dataplane.test_pipeline import mutated, property_rig

MAC_AT = 76  # where the kernel puts the MAC header in a TPACKET_V2 slot with a vnet header


def in_slot(mem: mmap.mmap, frame: bytes, stale: bytes) -> memoryview:
    """``frame`` written into the ring's first slot as the kernel lays it out."""
    start = MAC_AT - 10
    mem[:ring.FRAME_SIZE] = bytes(ring.FRAME_SIZE)
    mem[start:start + len(frame)] = frame
    mem[start + len(frame):start + len(frame) + len(stale)] = stale
    return memoryview(mem)[start:ring.FRAME_SIZE]


def state(rig: Rig, now: float) -> tuple:
    pl = rig.pipeline
    return (pl.counters, rig.eni.counters, pl.store.describe(now),
            rig.eni.frags.held_frames, len(rig.eni.arp))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_frames_in_ring_slots_give_what_frames_in_a_buffer_give(data) -> None:
    # both rigs draw the same "random" ports (each allocator seeded alike)
    with mock.patch.object(portalloc, "random",
                           SimpleNamespace(Random=lambda _seed=None: random.Random(7))):
        plain, ringed = property_rig(), property_rig()
        _feed_both(data, plain, ringed)


def _feed_both(data, plain: Rig, ringed: Rig) -> None:
    mem = mmap.mmap(-1, ring.FRAME_SIZE)
    try:
        now = 1.0
        for _ in range(data.draw(st.integers(1, 20))):
            side = data.draw(st.sampled_from(["env", "eni"]))
            frame = data.draw(mutated(side))
            stale = data.draw(st.binary(min_size=0, max_size=64))
            now += data.draw(st.sampled_from([0.0, 0.01, 1.0, 100.0]))
            for rig, buf in ((plain, bytearray(frame + stale)),
                             (ringed, in_slot(mem, frame, stale))):
                rig.pipeline.receive(rig.env if side == "env" else rig.eni, buf, len(frame),
                                     now)
                if isinstance(buf, memoryview):
                    buf.release()
            assert ringed.outs() == plain.outs()
            assert state(ringed, now) == state(plain, now)
    finally:
        mem.close()
