"""Probe connections from inside a namespace with real packets (``hyperplane reach``, tests).

    python -m hyperplane.services.reachprobe [--timeout S] tcp:HOST:PORT udp:HOST:PORT
                                             http:HOST:PORT ...
        one JSON list on stdout, one object per target, probed concurrently:
        {"target": "tcp:10.0.1.10:8080", "result": R, "detail": "..."} where R is
        connected / replied (udp) / refused / timeout / unreachable / error
    python -m hyperplane.services.reachprobe --udp-echo PORT [--ready FILE]
        a UDP echo server (each datagram is sent back, prefixed with the sender's address)

A TCP probe completes the handshake and closes; an HTTP probe also asks ``GET /whoami``
and reports the answering host's name as its detail (the same address may be another
host in another VPC); a UDP probe sends one datagram on a connected socket and waits for
any answer (an ICMP port unreachable gives ``refused``).
A timeout is what a security group or a missing route looks like from the inside, as in
AWS: the packets are dropped, nothing answers.
"""

from __future__ import annotations

import argparse
import errno
import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM)


def probe(target: str, timeout: float) -> dict:
    kind, _, rest = target.partition(":")
    host, _, port_text = rest.rpartition(":")
    result = {"target": target}
    try:
        address = socket.gethostbyname(host)
        port = int(port_text)
    except (OSError, ValueError) as exc:
        return dict(result, result="error", detail=f"cannot resolve {host!r}: {exc}")
    sock = socket.socket(socket.AF_INET,
                         socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        if kind == "tcp":
            return dict(result, result="connected", detail=f"{address}:{port}")
        if kind == "http":  # who answered: the host's /whoami names it
            sock.sendall(b"GET /whoami HTTP/1.0\r\nHost: reach\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            body = json.loads(data.partition(b"\r\n\r\n")[2] or b"{}")
            return dict(result, result="connected", detail=str(body.get("host", "")))
        sock.send(b"reach probe")
        data = sock.recv(2048)
        return dict(result, result="replied", detail=data.decode(errors="replace"))
    except TimeoutError:
        return dict(result, result="timeout", detail=f"no answer in {timeout:g} s")
    except ConnectionRefusedError:
        return dict(result, result="refused", detail="connection refused")
    except ValueError:
        return dict(result, result="connected", detail="")
    except OSError as exc:
        kind_of = "unreachable" if exc.errno in UNREACHABLE else "error"
        return dict(result, result=kind_of, detail=exc.strerror or str(exc))
    finally:
        sock.close()


def udp_echo(port: int, ready: str | None) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    if ready:
        Path(ready).touch()
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(f"{peer[0]}:{peer[1]} ".encode() + data, peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--udp-echo", type=int)
    parser.add_argument("--ready")
    args = parser.parse_args(argv)
    if args.udp_echo:
        udp_echo(args.udp_echo, args.ready)
        return 0
    with ThreadPoolExecutor(max_workers=max(1, min(64, len(args.targets)))) as pool:
        results = list(pool.map(lambda t: probe(t, args.timeout), args.targets))
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
