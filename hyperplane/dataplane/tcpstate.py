"""TCP connection tracking for Hyperplane sessions (pure).

The model is netfilter's ``nf_conntrack_proto_tcp``, kept loose: one state per
session, driven by the flags both directions send, and the sequence space
watched only as far as needed to judge a RST.

States: SYN_SENT (the environment's SYN), SYN_RECV (the answering SYN-ACK, or
the peer's own SYN in a simultaneous open), ESTABLISHED (an ACK of the other
side's SYN), FIN_WAIT (one FIN), CLOSE_WAIT (that FIN acknowledged),
LAST_ACK (both FINs), TIME_WAIT (both FINs acknowledged), CLOSE (a RST).  A
first outbound segment that is not a SYN picks the connection up mid-stream as
ESTABLISHED (netfilter's ``tcp_loose``).  An outbound SYN in TIME_WAIT or
CLOSE reopens the session as SYN_SENT with the same mapping.

Sequence tracking, per direction: the next expected sequence number after a
SYN or a FIN (``end_*``, ``fin_*``), and the last acknowledgement number and
window each side sent (``ack_*``, ``win_*``; window scale from the SYN
options).  A RST from one side is accepted when its sequence number lies in
the receiver's window from the receiver's last acknowledgement
(``ack <= seq < ack + max(window << scale, 1)``); while the receiver has
acknowledged nothing it must equal the sender's next sequence number, and in
SYN_SENT an inbound RST must acknowledge the SYN.  Anything else is out of
window: the pipeline drops and counts it, and the connection goes on.  With
neither known (a session read back after a dataplane restart: ``store`` forgets
the ACKs, and past the handshake the SYN ends, which may be stale) any RST is
accepted, until the next ACK re-learns them.

Timeouts: SYN_SENT keeps the unreplied ``tcp_syn`` timeout, set when the SYN
opened the session and never refreshed (retransmitted SYNs do not keep it
alive); SYN_RECV is refreshed with ``tcp_syn``; ESTABLISHED and the
half-closed FIN_WAIT / CLOSE_WAIT with ``tcp_established`` (``tcp_syn`` while
a picked-up connection is unreplied).  On the second FIN (LAST_ACK) or a RST
(CLOSE) the session gets ``tcp_transitory`` once and is not refreshed again:
it lingers that long, still forwarding, then expires.

Division of labour: the pipeline's fast path handles a plain ACK segment of
an ESTABLISHED session itself (it records the ACK and window and refreshes);
``start`` sets up a new session and ``track`` handles every other segment.
Neither touches addresses, ports or checksums.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from hyperplane.dataplane.conntrack import (  # noqa: F401 - the states, re-exported
    CLOSE,
    CLOSE_WAIT,
    ESTABLISHED,
    FIN_WAIT,
    LAST_ACK,
    NONE,
    STATE_NAMES,
    SYN_RECV,
    SYN_SENT,
    TIME_WAIT,
    UNKNOWN,
)
from hyperplane.dataplane.packet import IP_TOTAL, IP_VIHL, TCP_OFF, TCP_SEQ

if TYPE_CHECKING:
    from hyperplane.dataplane.conntrack import Session
    from hyperplane.model.settings import Timeouts

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
FAST_MASK = FIN | SYN | RST | ACK  # a segment with ``flags & FAST_MASK == ACK`` changes no state

SEQ_ACK_WIN = struct.Struct("!II2xH")  # at TCP_SEQ: sequence, acknowledgement, window
ACK_WIN = struct.Struct("!I2xH")       # at TCP_ACK: acknowledgement, window
MASK = 0xFFFFFFFF
HALF = 0x80000000


def seq_geq(a: int, b: int) -> bool:
    """``a`` at or after ``b`` in sequence space (modulo 2**32)."""
    return (a - b) & MASK < HALF


def payload_len(buf: bytearray, l4: int) -> int:
    """TCP payload bytes of the segment at ``l4`` (from the IPv4 total length)."""
    total = (buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]
    return max(0, total - ((buf[IP_VIHL] & 0x0F) << 2) - ((buf[l4 + TCP_OFF] >> 4) << 2))


def window_scale(buf: bytearray, l4: int, end: int) -> int:
    """The window-scale option of a SYN at ``l4`` (capped at 14), or UNKNOWN if absent."""
    at = l4 + 20
    stop = min(l4 + ((buf[l4 + TCP_OFF] >> 4) << 2), end)
    while at < stop:
        kind = buf[at]
        if kind == 1:
            at += 1
            continue
        if kind == 0 or at + 1 >= stop:
            break
        size = buf[at + 1]
        if size < 2:
            break
        if kind == 3 and size == 3 and at + 2 < stop:
            scale = buf[at + 2]
            return scale if scale < 14 else 14
        at += size
    return UNKNOWN


def start(s: Session, buf: bytearray, l4: int, end: int, flags: int, now: float,
          t: Timeouts) -> None:
    """Set up a new session, as ``make_session`` left it (or ``reopen``: timeout set, TCP
    fields unknown), from the outbound segment that made it."""
    seq, ack, win = SEQ_ACK_WIN.unpack_from(buf, l4 + TCP_SEQ)
    if flags & (SYN | ACK) == SYN:
        s.state = SYN_SENT
        s.end_out = (seq + 1 + payload_len(buf, l4)) & MASK
        s.wscale_out = window_scale(buf, l4, end)
        s.win_out = win
        return
    s.state = ESTABLISHED  # picked up mid-stream; stays on tcp_syn until a reply
    s.end_out = (seq + payload_len(buf, l4)) & MASK
    if flags & ACK:
        s.ack_out, s.win_out = ack, win
    if flags & FIN:
        track(s, buf, l4, end, flags, False, now, t)


def reopen(s: Session, buf: bytearray, l4: int, end: int, now: float, t: Timeouts) -> None:
    """A new SYN on a closed session's tuple: start over as SYN_SENT, same mapping."""
    s.replied = False
    s.timeout = t.tcp_syn
    s.expires = now + t.tcp_syn
    s.ack_out = s.ack_in = s.end_in = s.fin_out = s.fin_in = UNKNOWN
    s.win_out = s.win_in = 0
    s.wscale_out = s.wscale_in = UNKNOWN
    start(s, buf, l4, end, SYN, now, t)


def rst_in_window(s: Session, inbound: bool, seq: int, ack: int, flags: int) -> bool:
    if s.state == SYN_SENT and inbound:
        return bool(flags & ACK) and ack == s.end_out  # must acknowledge our SYN
    if inbound:
        r_ack, win, scale, peer_scale, end = (s.ack_out, s.win_out, s.wscale_out,
                                              s.wscale_in, s.end_in)
    else:
        r_ack, win, scale, peer_scale, end = (s.ack_in, s.win_in, s.wscale_in,
                                              s.wscale_out, s.end_out)
    if r_ack == UNKNOWN:
        return end == UNKNOWN or seq == end
    if scale > 0 and peer_scale != UNKNOWN:
        win <<= scale
    return (seq - r_ack) & MASK < max(win, 1)


def track(s: Session, buf: bytearray, l4: int, end: int, flags: int, inbound: bool,
          now: float, t: Timeouts) -> bool:
    """Advance the session for one segment; False if it is a RST out of window (drop it)."""
    seq, ack, win = SEQ_ACK_WIN.unpack_from(buf, l4 + TCP_SEQ)
    state = s.state
    if flags & RST:
        if not rst_in_window(s, inbound, seq, ack, flags):
            return False
        if inbound:
            s.replied = True
        if state < LAST_ACK:
            _close(s, CLOSE, now, t)
        else:
            s.state = CLOSE
        return True
    if flags & SYN and not flags & ACK and not inbound and state >= TIME_WAIT:
        reopen(s, buf, l4, end, now, t)
        return True
    if inbound:
        s.replied = True
    if flags & SYN:
        pay = (((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]) - ((buf[IP_VIHL] & 0x0F) << 2)
               - ((buf[l4 + TCP_OFF] >> 4) << 2))  # payload_len, inline
        seq_end = (seq + 1 + (pay if pay > 0 else 0)) & MASK
        if inbound:
            if state == SYN_SENT:
                s.end_in = seq_end
                s.wscale_in = window_scale(buf, l4, end)
                state = s.state = SYN_RECV
        elif state == SYN_SENT:  # a retransmitted SYN: no refresh
            s.end_out = seq_end
            s.wscale_out = window_scale(buf, l4, end)
            s.win_out = win
            return True
        elif state == SYN_RECV and s.end_out == UNKNOWN:
            s.end_out = seq_end
    if flags & ACK:
        if inbound:
            s.ack_in, s.win_in = ack, win
        else:
            s.ack_out, s.win_out = ack, win
        if state == SYN_RECV and not flags & SYN:
            peer_end = s.end_out if inbound else s.end_in
            if peer_end == UNKNOWN or (ack - peer_end) & MASK < HALF:  # seq_geq, inline
                state = s.state = ESTABLISHED
    fin_out, fin_in = s.fin_out, s.fin_in
    if flags & FIN and state != SYN_SENT:
        pay = (((buf[IP_TOTAL] << 8) | buf[IP_TOTAL + 1]) - ((buf[IP_VIHL] & 0x0F) << 2)
               - ((buf[l4 + TCP_OFF] >> 4) << 2))
        if inbound and fin_in == UNKNOWN:
            fin_in = s.fin_in = (seq + (pay if pay > 0 else 0) + 1) & MASK
        elif not inbound and fin_out == UNKNOWN:
            fin_out = s.fin_out = (seq + (pay if pay > 0 else 0) + 1) & MASK
    if fin_out != UNKNOWN or fin_in != UNKNOWN:  # closing: which FINs are acknowledged
        ack_in, ack_out = s.ack_in, s.ack_out
        out_acked = fin_out != UNKNOWN and ack_in != UNKNOWN and (ack_in - fin_out) & MASK < HALF
        in_acked = fin_in != UNKNOWN and ack_out != UNKNOWN and (ack_out - fin_in) & MASK < HALF
        if fin_out != UNKNOWN and fin_in != UNKNOWN:
            closing = TIME_WAIT if out_acked and in_acked else LAST_ACK
        else:
            closing = CLOSE_WAIT if out_acked or in_acked else FIN_WAIT
        if closing >= LAST_ACK and state < LAST_ACK:
            _close(s, closing, now, t)
            return True
        if state != CLOSE:
            state = s.state = closing
    if state == SYN_SENT or state >= LAST_ACK:
        return True  # unreplied, or lingering: not refreshed
    timeout = t.tcp_syn if state == SYN_RECV or not s.replied else t.tcp_established
    s.timeout = timeout
    s.expires = now + timeout
    return True


def _close(s: Session, state: int, now: float, t: Timeouts) -> None:
    s.state = state
    s.timeout = t.tcp_transitory
    s.expires = now + t.tcp_transitory
