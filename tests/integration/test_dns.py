"""The VPC resolver at base + 2, with real packets (the quickstart: db.vpc-app.internal).

Environments, hosts and ``exec`` commands see ``nameserver 10.0.0.2`` and the VPC's zone as
search domain; handlers resolve through it too (test_egress); another VPC's names are
unknown (test_isolation's tenants each have their own resolver at the same address).
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration import hp

DB = "10.0.1.10"


def test_exec_sees_the_vpc_resolver(quickstart: dict, state_dir: Path) -> None:
    for where in (["--function", "orders"], ["db"]):
        conf = hp.run("exec", *where, "--", "cat", "/etc/resolv.conf",
                      state_dir=state_dir).stdout
        assert "nameserver 10.0.0.2" in conf and "search vpc-app.internal" in conf
    # the machine's own resolv.conf is untouched
    assert "10.0.0.2" not in Path("/etc/resolv.conf").read_text()


def test_names_resolve_from_environments_and_hosts(quickstart: dict, state_dir: Path) -> None:
    for where in (["--function", "orders"], ["db"]):
        out = hp.run("exec", *where, "--", "getent", "ahostsv4", "db.vpc-app.internal",
                     state_dir=state_dir).stdout
        assert out.split()[0] == DB
    short = hp.run("exec", "--function", "orders", "--", "getent", "hosts", "db",
                   state_dir=state_dir).stdout  # through the search domain
    assert short.split()[0] == DB


def test_curl_by_name_through_hyperplane(quickstart: dict, state_dir: Path) -> None:
    out = hp.run("exec", "--function", "orders", "--", "curl", "-sS", "--max-time", "5",
                 "http://db.vpc-app.internal:8080/whoami", state_dir=state_dir).stdout
    assert json.loads(out)["host"] == "db"


def test_unknown_names_fail_fast(quickstart: dict, state_dir: Path) -> None:
    script = ("import socket, time; t = time.monotonic()\n"
              "try:\n    socket.gethostbyname('nope.vpc-app.internal')\n"
              "except socket.gaierror as e:\n    print(e.errno, time.monotonic() - t)")
    result = hp.run("exec", "--function", "orders", "--", "python3", "-c", script,
                    state_dir=state_dir).stdout.split()
    assert int(result[0]) == -2  # EAI_NONAME: NXDOMAIN, not a timeout
    assert float(result[1]) < 1.0
