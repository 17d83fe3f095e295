"""The kernel references: the benchmark's path with the kernel doing the work.

The same chain of namespaces as the Hyperplane path, hop for hop (shown for
the NAT chain, prefix ``hp-k``; the routing chain is the same with ``hp-p``)::

    hp-kc (client)         hp-kn (kernel NAT)              hp-kr (router)      hp-ks (server)
    eth0 169.254.128.1 --- hpkc 169.254.0.1   hpkn 10.0.1.4 --- hpkn0 -+- hpbr0 10.0.1.1
                           [nftables masquerade]                        +- hpks0 --- eth0 10.0.1.10

In the NAT chain an nftables table masquerades what leaves on ``hpkn``
(connection tracking included).  The routing chain has no rules at all (no
conntrack in its namespaces): plain kernel routing, the server routing
169.254.128.0/17 back via 10.0.1.4, which is the machine's limit.  The
objects are ``fabric`` records, built and removed with the same plan/apply
as the emulator itself.
"""

from __future__ import annotations

import subprocess

from hyperplane.fabric.objects import (
    Address,
    Bridge,
    KernelObject,
    Master,
    Route,
    Up,
    Veth,
    namespace_objects,
    plan,
)
from hyperplane.kernel import build, netlink

NAT_CHAIN = "k"
ROUTING_CHAIN = "p"
CLIENT_IP = "169.254.128.1"
GATEWAY = "169.254.0.1"
NAT_IP = "10.0.1.4"
SERVER_IP = "10.0.1.10"
RULES = """table ip hpbench {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "hpkn" masquerade
  }
}
"""


def chain(tag: str) -> tuple[str, str, str, str]:
    """(client, nat, router, server) namespaces of a chain."""
    return tuple(f"hp-{tag}{role}" for role in "cnrs")  # type: ignore[return-value]


def objects(tag: str) -> frozenset[KernelObject]:
    CLIENT, NAT, ROUTER, SERVER = chain(tag)  # noqa: N806 - read like constants
    objs: list[KernelObject] = []
    objs += namespace_objects(CLIENT) + namespace_objects(SERVER)
    for ns in (NAT, ROUTER):
        objs += namespace_objects(ns, forwarding=True)
    objs += [
        Veth(NAT, "hpkc", CLIENT, "eth0"), Up(NAT, "hpkc"), Up(CLIENT, "eth0"),
        Address(CLIENT, "eth0", CLIENT_IP, 32), Address(NAT, "hpkc", GATEWAY, 32),
        Route(CLIENT, GATEWAY + "/32", None, "eth0"), Route(CLIENT, None, GATEWAY, "eth0"),
        Route(NAT, CLIENT_IP + "/32", None, "hpkc"),
        Bridge(ROUTER, "hpbr0"), Up(ROUTER, "hpbr0"), Address(ROUTER, "hpbr0", "10.0.1.1", 24),
        Veth(NAT, "hpkn", ROUTER, "hpkn0"), Master(ROUTER, "hpkn0", "hpbr0"),
        Up(ROUTER, "hpkn0"), Up(NAT, "hpkn"), Address(NAT, "hpkn", NAT_IP, 24),
        Veth(ROUTER, "hpks0", SERVER, "eth0"), Master(ROUTER, "hpks0", "hpbr0"),
        Up(ROUTER, "hpks0"), Up(SERVER, "eth0"), Address(SERVER, "eth0", SERVER_IP, 24),
        Route(SERVER, None, "10.0.1.1"), Route(SERVER, "169.254.128.0/17", NAT_IP),
    ]
    return frozenset(objs)


def build_reference() -> None:
    objs = objects(NAT_CHAIN) | objects(ROUTING_CHAIN)
    build.apply(plan(frozenset(), objs))
    nat_ns = chain(NAT_CHAIN)[1]
    subprocess.run(["nft", "-f", "-"], input=RULES.encode(), check=True,
                   preexec_fn=lambda: netlink.enter_netns(nat_ns))


def remove_reference() -> None:
    for tag in (NAT_CHAIN, ROUTING_CHAIN):
        for ns in chain(tag):
            netlink.remove_netns(ns)


def conntrack_object_size() -> int | None:
    """Bytes per kernel conntrack entry (the nf_conntrack slab's object size)."""
    try:
        with open("/proc/slabinfo") as fh:
            for line in fh:
                if line.startswith("nf_conntrack "):
                    return int(line.split()[3])
    except OSError:
        return None
    return None
