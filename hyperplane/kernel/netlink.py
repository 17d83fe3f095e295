"""Netlink side effects: the one module that imports pyroute2.

Everything the project does to the kernel's network objects goes through the
small idempotent functions here: create or remove a namespace, a veth pair
(its peer placed straight into another namespace in the same call), a bridge,
an address, a route, a sysctl, a permanent neighbour entry.  "Already exists"
(EEXIST) on create and "no such device" (ENODEV) on delete are tolerated, so
re-running a build or a cleanup is safe.  Waiting for the kernel is done by polling its state, never
by sleeping a fixed time.

Speed: nothing here forks.  A namespace is made in-process (unshare, then
bind-mount it under /run/netns, then return to the caller's namespace), a
netlink socket for a namespace is opened by entering it for the moment of
``socket()`` and kept in a small cache, and a sysctl is written the same way
(the kernel resolves /proc/sys/net against the opener's namespace).  This
takes namespace set-up from about a hundred per second (one child process
per call, pyroute2's default) to over a thousand.  Call it from the main
thread only: entering a namespace is per thread.

Names: every namespace we create starts with ``hp-`` and every interface with
``hp`` (or is ``eth0`` inside a namespace of ours); all fit IFNAMSIZ.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyroute2 itself is imported on first use: it costs ~120 ms
    from pyroute2 import IPRoute

IFNAMSIZ = 15
NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


def _pyroute2():
    """pyroute2's namespace helpers, imported on first use (commands such as a warm
    ``invoke`` or ``exec`` never need netlink, and importing pyroute2 takes ~120 ms)."""
    from pyroute2 import netns
    return netns


def _iproute() -> type:
    from pyroute2 import IPRoute
    return IPRoute


def _netlink_error() -> type:
    from pyroute2.netlink.exceptions import NetlinkError
    return NetlinkError
# per (thread, namespace): a pyroute2 0.9 socket used from another thread than the one
# that opened it mis-encodes nested attributes (a veth's peer name is lost)
_SOCKETS: dict[tuple[int, str], IPRoute] = {}
SOCKET_CACHE = 128
_INDEX: dict[tuple[str, str], int] = {}  # (namespace, ifname) -> ifindex, learnt once
_CREATED_UP: set[tuple[str, str]] = set()  # links this process created already up
LOOPBACK_INDEX = 1  # lo is always the first interface of a new namespace


def check_name(name: str) -> str:
    """Refuse a kernel object name that would be truncated by the kernel."""
    if not name or len(name) > IFNAMSIZ:
        raise ValueError(f"kernel object name {name!r} must be 1-{IFNAMSIZ} characters")
    return name


def list_netns(prefix: str) -> list[str]:
    """Named namespaces whose name starts with ``prefix``."""
    return sorted(n for n in _pyroute2().listnetns() if n.startswith(prefix))


def netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the block with the calling thread inside namespace ``name`` (never creates it:
    a missing one raises FileNotFoundError), then back in the thread's own.  Plain
    setns(2) on descriptors: pyroute2's ``setns`` lists /run/netns at every call, which
    with a thousand namespaces made every entry cost a directory read."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_path(os.path.join(NETNS_DIR, name), name)
        try:
            yield
        finally:
            _setns_fd(home, "back from " + name)
    finally:
        os.close(home)


def _setns_path(path: str, name: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns_fd(fd, name)
    finally:
        os.close(fd)


def _setns_fd(fd: int, name: str) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns {name}: {os.strerror(code)}")


def ensure_netns(name: str) -> None:
    """Create a named network namespace with loopback up (idempotent)."""
    check_name(name)
    if not netns_exists(name):
        _pyroute2().pushns()
        try:
            if _LIBC.unshare(CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"unshare: {os.strerror(code)}")
            _pyroute2().attach(name, "thread-self")  # this thread's, not the main one's
        finally:
            _pyroute2().popns()
    with ipr(name) as ip:
        ip.link("set", index=LOOPBACK_INDEX, state="up")


def remove_netns(name: str) -> None:
    """Remove a named namespace; its interfaces go with it (idempotent)."""
    for key in [k for k in _SOCKETS if k[1] == name]:
        _SOCKETS.pop(key).close()
    for key in [k for k in _INDEX if k[0] == name]:
        del _INDEX[key]
    _CREATED_UP.difference_update({k for k in _CREATED_UP if k[0] == name})
    if netns_exists(name):
        try:
            _pyroute2().remove(name)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL):
                raise


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError:
        return None


@contextmanager
def ipr(ns: str) -> Iterator[IPRoute]:
    """An IPRoute socket inside namespace ``ns`` (cached); never creates the namespace."""
    key = (threading.get_ident(), ns)
    ip = _SOCKETS.get(key)
    if ip is None:
        if not netns_exists(ns):
            raise FileNotFoundError(f"no network namespace {ns}")
        with inside(ns):
            ip = _iproute()()
        if len(_SOCKETS) >= SOCKET_CACHE:  # bounded: the oldest socket goes
            _SOCKETS.pop(next(iter(_SOCKETS))).close()
        _SOCKETS[key] = ip
    yield ip


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name`` (setns(2); never creates one)."""
    _setns_path(os.path.join(NETNS_DIR, name), name)


def _index(ip: IPRoute, ifname: str) -> int | None:
    found = ip.link_lookup(ifname=ifname)
    return found[0] if found else None


def _tolerate(code: int, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except _netlink_error() as exc:
        if exc.code != code:
            raise
        return None


def add_veth(ns: str, ifname: str, peer_ns: str, peer_ifname: str,
             mac: str | None = None, peer_mac: str | None = None, mtu: int = 1500) -> None:
    """A veth pair with ``ifname`` in ``ns`` and ``peer_ifname`` in ``peer_ns``."""
    check_name(ifname)
    check_name(peer_ifname)
    # our own descriptor of the peer namespace: pyroute2 keeps the ones it opens by
    # name, which would point at a removed namespace once the name is used again
    peer_fd = os.open(os.path.join(NETNS_DIR, peer_ns), os.O_RDONLY)
    try:
        with ipr(ns) as ip:
            peer: dict = {"ifname": peer_ifname, "net_ns_fd": peer_fd, "mtu": mtu}
            if peer_mac:
                peer["address"] = peer_mac
            kwargs: dict = {"ifname": ifname, "kind": "veth", "peer": peer, "mtu": mtu,
                            "state": "up"}
            if mac:
                kwargs["address"] = mac
            if _tolerate(errno.EEXIST, ip.link, "add", **kwargs) is not None:
                _CREATED_UP.add((ns, ifname))
    finally:
        os.close(peer_fd)


def add_bridge(ns: str, ifname: str, mac: str | None = None) -> None:
    """A bridge (no STP, no forwarding delay); ``mac`` fixes its address (else the kernel
    takes its lowest port's, which changes as ports come and go)."""
    check_name(ifname)
    with ipr(ns) as ip:
        if _index(ip, ifname) is None:
            kwargs: dict = {"ifname": ifname, "kind": "bridge", "br_stp_state": 0,
                            "br_forward_delay": 0}
            if mac:
                kwargs["address"] = mac
            _tolerate(errno.EEXIST, ip.link, "add", **kwargs)


def set_master(ns: str, ifname: str, bridge: str) -> None:
    with ipr(ns) as ip:
        ip.link("set", index=_require(ip, ifname, ns), master=_require(ip, bridge, ns))


def link_up(ns: str, ifname: str) -> None:
    if (ns, ifname) in _CREATED_UP:
        return
    with ipr(ns) as ip:
        ip.link("set", index=_require(ip, ifname, ns), state="up")


def delete_link(ns: str, ifname: str) -> None:
    if not netns_exists(ns):
        return
    with ipr(ns) as ip:
        index = _index(ip, ifname)
        if index is not None:
            _tolerate(errno.ENODEV, ip.link, "del", index=index)
    _INDEX.pop((ns, ifname), None)
    _CREATED_UP.discard((ns, ifname))


def forget_link(ns: str, ifname: str) -> None:
    """Drop what is cached about a link that went (a deleted veth's peer)."""
    _INDEX.pop((ns, ifname), None)
    _CREATED_UP.discard((ns, ifname))


def _require(ip: IPRoute, ifname: str, ns: str | None = None) -> int:
    """The index of ``ifname``, waiting for it to appear; cached per namespace."""
    if ns is not None and (ns, ifname) in _INDEX:
        return _INDEX[(ns, ifname)]
    index = _wait_index(ip, ifname)
    if index is None:
        raise LookupError(f"interface {ifname} did not appear")
    if ns is not None:
        _INDEX[(ns, ifname)] = index
    return index


def _wait_index(ip: IPRoute, ifname: str, timeout: float = 5.0) -> int | None:
    deadline = time.monotonic() + timeout
    while True:
        index = _index(ip, ifname)
        if index is not None or time.monotonic() > deadline:
            return index
        time.sleep(0.005)


def add_address(ns: str, ifname: str, address: str, prefixlen: int) -> None:
    with ipr(ns) as ip:
        _tolerate(errno.EEXIST, ip.addr, "add", index=_require(ip, ifname, ns),
                  address=address, prefixlen=prefixlen)


def add_route(ns: str, dst: str | None, gateway: str | None = None,
              ifname: str | None = None, table: int | None = None,
              kind: str | None = None) -> None:
    """``dst`` None means the default route; without gateway the route is on-link.

    ``table`` None is the main table; ``kind`` "blackhole" drops silently (no ICMP).
    """
    with ipr(ns) as ip:
        kwargs: dict = {"dst": dst or "0.0.0.0/0"}
        if gateway:
            kwargs["gateway"] = gateway
        if ifname:
            kwargs["oif"] = _require(ip, ifname, ns)
            if not gateway:
                kwargs["scope"] = 253  # link
        if table is not None:
            kwargs["table"] = table
        if kind is not None:
            kwargs["type"] = kind
        _tolerate(errno.EEXIST, ip.route, "add", **kwargs)


def add_rule(ns: str, iif: str, table: int, priority: int) -> None:
    """A policy rule: packets arriving on ``iif`` look up ``table`` (idempotent)."""
    with ipr(ns) as ip:
        for rule in ip.rule("dump"):
            if rule.get("FRA_PRIORITY") == priority and rule.get("FRA_TABLE") == table \
                    and rule.get("FRA_IIFNAME") == iif:
                return
        _tolerate(errno.EEXIST, ip.rule, "add", table=table, priority=priority, iifname=iif)


def set_sysctl(ns: str, key: str, value: str) -> None:
    """Write /proc/sys/<key> inside ``ns`` (net sysctls are per namespace)."""
    with inside(ns), open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
        fh.write(value)


NUD_PERMANENT = 0x80
RTM_NEWNEIGH = 28
NLMSG_ERROR = 2
NETLINK_ROUTE = 0
NEIGH_REPLACE_FLAGS = 0x1 | 0x4 | 0x100 | 0x400  # REQUEST, ACK, REPLACE, CREATE
NEIGH_BATCH = 256  # requests per send (their acknowledgements fit a socket's buffer)


def set_neighbours(ns: str, entries: list[tuple[str, str, str]]) -> None:
    """Permanent neighbour entries ``(ifname, address, mac)`` in ``ns`` (``replace``: made,
    or made permanent and pointed at ``mac`` if the kernel had learnt one; idempotent).

    A topology needs tens of thousands (``fabric.neighbours``), and pyroute2's request
    path costs ~0.7 ms a call: the requests are encoded by pyroute2's ``ndmsg``, sent
    ``NEIGH_BATCH`` to a ``send`` on a netlink socket of the namespace, and every
    acknowledgement is read and checked (an error raises ``OSError`` naming the entry).
    """
    if not entries:
        return
    with ipr(ns) as ip:
        index = {ifname: _require(ip, ifname, ns) for ifname in {e[0] for e in entries}}
    with inside(ns):
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
        for start in range(0, len(entries), NEIGH_BATCH):
            chunk = entries[start:start + NEIGH_BATCH]
            sock.send(b"".join(_neigh_request(index[ifname], address, mac, seq)
                               for seq, (ifname, address, mac) in enumerate(chunk, 1)))
            _acknowledged(sock, ns, chunk)
    finally:
        sock.close()


def _neigh_request(ifindex: int, address: str, mac: str, seq: int) -> bytes:
    from pyroute2.netlink.rtnl.ndmsg import ndmsg
    msg = ndmsg()
    msg["family"], msg["ifindex"], msg["state"] = socket.AF_INET, ifindex, NUD_PERMANENT
    msg["attrs"] = [["NDA_DST", address], ["NDA_LLADDR", mac]]
    msg["header"]["type"] = RTM_NEWNEIGH
    msg["header"]["flags"] = NEIGH_REPLACE_FLAGS
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _acknowledged(sock: socket.socket, ns: str, chunk: list[tuple[str, str, str]]) -> None:
    """Read one acknowledgement per request of ``chunk`` (sequence numbers 1..n)."""
    waiting = len(chunk)
    while waiting:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", data, offset + 16)
                if error:
                    ifname, address, mac = chunk[seq - 1]
                    raise OSError(-error, f"neighbour {address} at {mac} on {ifname} in "
                                          f"{ns}: {os.strerror(-error)}")
                waiting -= 1
            offset += (length + 3) & ~3


def delete_neighbour(ns: str, ifname: str, address: str) -> None:
    """Remove a neighbour entry (idempotent: a missing entry, link or namespace is fine)."""
    if not netns_exists(ns):
        return
    with ipr(ns) as ip:
        index = _INDEX.get((ns, ifname)) or _index(ip, ifname)
        if index is not None:
            _tolerate(errno.ENOENT, ip.neigh, "del", dst=address, ifindex=index)


def neighbours(ns: str) -> list[dict]:
    """The IPv4 neighbour entries of ``ns``: address, MAC, state (a number), link index."""
    with ipr(ns) as ip:
        return [{"ip": n.get_attr("NDA_DST"), "mac": n.get_attr("NDA_LLADDR"),
                 "state": n["state"], "ifindex": n["ifindex"]}
                for n in ip.neigh("dump", family=2)]
