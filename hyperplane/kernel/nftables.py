"""nftables inside our namespaces (side effects): apply a script, read its counters.

The scripts are rendered by pure modules (``hostfw``); this module only runs them inside
the target namespace, so nothing is ever applied to the machine's own firewall: through
libnftables in-process (``libnft``: the thread enters the namespace for the command), or,
without the library, the ``nft`` binary with the child placed in the namespace first
(``setns`` before ``exec``, as ``procs.spawn`` does).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from contextlib import AbstractContextManager

from hyperplane.kernel import libnft, netlink

NFT_TIMEOUT = 10.0


def _nft(ns: str, args: list[str], script: str | None = None) -> subprocess.CompletedProcess:
    """``nft ARGS`` (``-f -`` with ``script``; ``-j`` for JSON) inside ``ns``: in-process
    through ``libnft`` when libnftables loads (0.1 ms for a read), else the binary (33 ms)."""
    if libnft.available():
        json_output = args[0] == "-j"
        words = args[1:] if json_output else args
        text = script if words == ["-f", "-"] else " ".join(words)
        code, out, err = libnft.run(ns, text or "", json_output)
        return subprocess.CompletedProcess(args, code, out, err)
    binary = shutil.which("nft") or "/usr/sbin/nft"
    try:
        return subprocess.run([binary, *args], input=script, text=True, capture_output=True,
                              timeout=NFT_TIMEOUT, preexec_fn=lambda: netlink.enter_netns(ns))
    except FileNotFoundError:
        raise RuntimeError("the nft binary is missing (Debian package nftables); "
                           "security groups of hosts need it") from None


def apply(ns: str, script: str) -> None:
    """Run an nft script atomically inside namespace ``ns``."""
    result = _nft(ns, ["-f", "-"], script)
    if result.returncode != 0:
        raise RuntimeError(f"nft failed in {ns}: {result.stderr.strip()}")


def batch() -> AbstractContextManager[None]:
    """Commands of the block (many namespaces' firewalls) free their libnftables contexts
    in batches (``libnft.batch``): every host's firewall applied again in about a second
    at a thousand hosts, not fifteen."""
    return libnft.batch()


def counters(ns: str, table: str) -> dict[str, int]:
    """Packets counted by each named counter of ``table`` in ``ns`` ({} without the table)."""
    result = _nft(ns, ["-j", "list", "counters", "table", "ip", table])
    if result.returncode != 0:
        return {}
    found = {}
    for item in json.loads(result.stdout).get("nftables", []):
        counter = item.get("counter")
        if counter:
            found[counter["name"]] = counter["packets"]
    return found



def listing(ns: str, table: str | None = None) -> dict | None:
    """``nft -j list table ip TABLE`` in ``ns`` (every ``ip`` table without ``table``),
    parsed; None when the table (or the namespace) is not there."""
    args = ["list", "table", "ip", table] if table else ["list", "ruleset", "ip"]
    result = _nft(ns, ["-j", *args])
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def tables(found: dict) -> set[str]:
    """The names of the tables in a listing."""
    return {item["table"]["name"] for item in found.get("nftables", []) if "table" in item}
