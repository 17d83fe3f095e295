"""The control plane through the real CLI: function states, shared ENIs, updates, idleness,
ENI deletion, a controller killed with -9, reserved concurrency, functions without VPC.

One topology (``topologies/control_plane.yaml``: ENIs take 2 s to create, 5 s to delete)
for the module.  Every test creates its own functions (``hyperplane function create``),
each with its own security groups so no two tests share an ENI, and deletes them at the
end.  Everything is asserted from what the CLI prints (``function get --json`` with
Lambda's field names, ``eni list --json``, the errors ``{"errorType", "errorMessage",
"statusCode"}``) and from what the database host saw (``orders`` returns ``database_saw``).
``Holder`` and the helpers are shared with ``test_control_plane_enis.py``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration import hp
from tests.integration.conftest import bring_up

TOPOLOGY = "tests/integration/topologies/control_plane.yaml"
ORDERS = ("--code", "examples/functions", "--handler", "orders.handler")
PYTHON = ("--code", "tests/integration/functions/python")
DB = "10.0.1.10"
WAIT = 15.0  # bound of every wait for a state (ENIs take 2 s here)


@pytest.fixture(scope="module")
def topology(state_dir: Path) -> Iterator[dict]:
    yield from bring_up(state_dir, TOPOLOGY)


# -- helpers (also used by test_control_plane_enis.py) --------------------------------------
def vpc(subnets: str, groups: str) -> tuple[str, ...]:
    return ("--subnet-ids", subnets, "--security-group-ids", groups)


def create(state_dir: Path, name: str, *args: str) -> dict:
    return hp.run_json("function", "create", name, *args, state_dir=state_dir)


def get(state_dir: Path, name: str) -> dict:
    return hp.run_json("function", "get", name, state_dir=state_dir)


def enis(state_dir: Path) -> list[dict]:
    return hp.run_json("eni", "list", state_dir=state_dir)


def rows_of(state_dir: Path, function: str) -> list[dict]:
    return [r for r in enis(state_dir) if function in r["functions"]]


def invoke(state_dir: Path, name: str, payload: str = "{}") -> dict:
    """A successful invocation's whole reply (``invoke --json``)."""
    return hp.run_json("invoke", name, "--payload", payload, state_dir=state_dir)


def api_error(result: subprocess.CompletedProcess) -> dict:
    """The AWS error a command printed on stdout (exit 1)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    error = json.loads(result.stdout)
    assert set(error) >= {"errorType", "errorMessage", "statusCode"}, error
    return error


def refused(state_dir: Path, *args: str) -> dict:
    return api_error(hp.run(*args, "--json", state_dir=state_dir, check=False))


def until(fetch: Callable[[], object], accept: Callable[[object], bool],
          timeout: float = WAIT):
    """Poll ``fetch()`` until ``accept`` holds for its value; that value."""
    seen: list = []

    def probe() -> bool:
        seen.append(fetch())
        return accept(seen[-1])
    assert hp.wait_for(probe, timeout), f"still {seen[-1] if seen else None!r} after {timeout} s"
    return seen[-1]


def wait_state(state_dir: Path, name: str, state: str) -> dict:
    return until(lambda: get(state_dir, name), lambda f: f["State"] == state)


@contextmanager
def functions(state_dir: Path, *names: str) -> Iterator[None]:
    """Delete the functions at the end, whatever happened."""
    try:
        yield
    finally:
        for name in names:
            hp.run("function", "delete", name, state_dir=state_dir, check=False)


HOLDER = r"""
import http.client, json, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = []
def whoami(conn):
    conn.request("GET", "/whoami")
    return json.loads(conn.getresponse().read())
def one_more():
    conn = http.client.HTTPConnection(host, port, timeout=3)
    seen = whoami(conn)
    held.append(conn)
    return seen
print(json.dumps([one_more() for _ in range(count)]), flush=True)
for line in sys.stdin:
    try:
        out = one_more() if line.strip() == "more" else [whoami(c) for c in held]
    except OSError as exc:
        out = {"error": repr(exc)}
    print(json.dumps(out), flush=True)
"""


class Holder:
    """``hyperplane exec --function F`` holding ``count`` keep-alive HTTP connections to
    ``host``: the first reply is what the host saw on each; ``ask("again")`` sends one
    more request on every held connection, ``ask("more")`` opens one more connection."""

    def __init__(self, state_dir: Path, function: str, host: str, count: int,
                 port: int = 8080) -> None:
        env = dict(os.environ, HYPERPLANE_STATE_DIR=str(state_dir))
        self.proc = subprocess.Popen(
            [*hp.CLI, "exec", "--function", function, "--", sys.executable, "-c", HOLDER,
             host, str(port), str(count)], cwd=hp.REPO, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line)
        self.lines.put(None)

    def reply(self, timeout: float = 20.0):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the holder said nothing for {timeout} s") from None
        if line is None:
            self.proc.wait(timeout=5)
            raise AssertionError(f"the holder ended ({self.proc.returncode}): "
                                 f"{self.proc.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self.reply()

    def close(self) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


@contextmanager
def holding(state_dir: Path, function: str, host: str, count: int) -> Iterator[Holder]:
    holder = Holder(state_dir, function, host, count)
    try:
        yield holder
    finally:
        holder.close()


# -- 1. Pending until the ENIs exist ----------------------------------------------------------
TRIES = 3  # a 2 s window missed by a loaded machine is tried again, with a fresh ENI key


def pending_checks(state_dir: Path, name: str, group: str) -> bool:
    """Create ``name``; while Pending, invoke and update are refused and its ENI is
    ``creating``.  False when the checks may have come after the ENI (``get`` afterwards
    is no longer Pending): nothing could be concluded."""
    created = create(state_dir, name, *ORDERS, *vpc("subnet-a", group))
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating"), created
    assert created["VpcConfig"]["VpcId"] == "vpc-cp"
    calls = {"invoke": ("invoke", name, "--json"),
             "update": ("function", "update", name, "--memory", "256", "--json"),
             "enis": ("eni", "list", "--json")}
    started = {k: hp.start_capture(*args, state_dir=state_dir) for k, args in calls.items()}
    out = {k: (*p.communicate(timeout=30), p.returncode) for k, p in started.items()}
    if get(state_dir, name)["State"] != "Pending":
        return False  # every check ran before this get: all of them saw Pending
    for call in ("invoke", "update"):
        stdout, stderr, code = out[call]
        assert code == 1, (call, stdout, stderr)
        error = json.loads(stdout)
        assert (error["errorType"], error["statusCode"]) == (
            "ResourceConflictException", 409), (call, error)
        assert "Pending" in error["errorMessage"], error
    [row] = [r for r in json.loads(out["enis"][0]) if name in r["functions"]]
    assert row["status"] == "creating" and row["security_groups"] == [group], row

    seen: list[tuple[str, str]] = []  # (State, then the ENI's status): never Active first

    def active() -> bool:
        state = get(state_dir, name)["State"]
        seen.append((state, next(r["status"] for r in enis(state_dir) if r["id"] == row["id"])))
        return state == "Active"
    assert hp.wait_for(active, WAIT), seen[-1]
    assert ("Active", "creating") not in seen, seen
    assert seen[-1] == ("Active", "in-use")
    fn = get(state_dir, name)
    assert fn["StateReasonCode"] is None and fn["MemorySize"] == 128  # the update was refused
    reply = invoke(state_dir, name)
    assert reply["eni"] == row["id"] and reply["result"]["database_saw"] == row["ip"]
    return True


def test_create_is_pending_until_its_eni_exists_and_refuses_invoke_and_update(
        topology: dict, state_dir: Path) -> None:
    names = [f"pend{k}" for k in range(TRIES)]
    with functions(state_dir, *names):
        if not any(pending_checks(state_dir, name, f"sg-p{k}") for k, name in enumerate(names)):
            pytest.fail(f"Active before the checks ran, {TRIES} times (a 2 s window)")


# -- 2. one ENI per (subnet, security-group set), shared -----------------------------------
def test_same_subnets_and_groups_share_enis_another_group_set_gets_its_own(
        topology: dict, state_dir: Path) -> None:
    with functions(state_dir, "share1", "share2", "other"):
        for name, groups in (("share1", "sg-x"), ("share2", "sg-x"), ("other", "sg-y,sg-x")):
            create(state_dir, name, *ORDERS, *vpc("subnet-a,subnet-b", groups))
        for name in ("share1", "share2", "other"):
            wait_state(state_dir, name, "Active")
        shared, own = rows_of(state_dir, "share1"), rows_of(state_dir, "other")
        assert sorted(r["subnet"] for r in shared) == ["subnet-a", "subnet-b"]
        assert sorted(r["subnet"] for r in own) == ["subnet-a", "subnet-b"]
        for r in shared:
            assert sorted(r["functions"]) == ["share1", "share2"], r
            assert r["security_groups"] == ["sg-x"] and r["status"] == "in-use"
        for r in own:
            assert r["functions"] == ["other"] and r["security_groups"] == ["sg-x", "sg-y"], r
        assert not {r["id"] for r in shared} & {r["id"] for r in own}
        assert len({r["ip"] for r in shared + own}) == 4
        by_id = {r["id"]: r for r in shared + own}
        saw = {}
        for name in ("share1", "share2", "other"):
            reply = invoke(state_dir, name)
            assert reply["result"]["database_saw"] == by_id[reply["eni"]]["ip"], reply
            saw[name] = reply["eni"]
        assert saw["share1"] == saw["share2"] and saw["share1"] in {r["id"] for r in shared}
        assert saw["other"] in {r["id"] for r in own}


# -- 3. a VPC update: Active, InProgress on the old ENI, then Successful on the new ----------
def test_vpc_update_keeps_serving_through_the_old_eni_until_successful(
        topology: dict, state_dir: Path) -> None:
    with functions(state_dir, "upd"):
        create(state_dir, "upd", *ORDERS, *vpc("subnet-a", "sg-u1"))
        wait_state(state_dir, "upd", "Active")
        [old] = rows_of(state_dir, "upd")
        last = invoke(state_dir, "upd")
        assert last["result"]["database_saw"] == old["ip"]
        for group in ("sg-u2", "sg-u3", "sg-u4")[:TRIES]:  # a fresh ENI key each time
            updated = hp.run_json("function", "update", "upd", *vpc("subnet-a", group),
                                  state_dir=state_dir)
            during = invoke(state_dir, "upd")
            after_call = get(state_dir, "upd")  # still InProgress: the invoke was during it
            assert (updated["State"], updated["LastUpdateStatus"],
                    updated["LastUpdateStatusReasonCode"]) == ("Active", "InProgress",
                                                               "Creating"), updated
            assert after_call["State"] == "Active"
            assert after_call["VpcConfig"]["SecurityGroupIds"] == [group]
            done = until(lambda: get(state_dir, "upd"),
                         lambda f: f["LastUpdateStatus"] != "InProgress")
            assert (done["State"], done["LastUpdateStatus"],
                    done["LastUpdateStatusReasonCode"]) == ("Active", "Successful", None)
            [new] = [r for r in rows_of(state_dir, "upd") if r["security_groups"] == [group]]
            assert new["status"] == "in-use"
            assert new["id"] != old["id"] and new["ip"] != old["ip"]
            after = invoke(state_dir, "upd")
            assert after["eni"] == new["id"] and after["result"]["database_saw"] == new["ip"]
            left = [r for r in enis(state_dir) if r["id"] == old["id"]]
            assert not left or left[0]["status"] == "deleting", left  # nobody uses it now
            if after_call["LastUpdateStatus"] == "InProgress":
                assert during["eni"] == old["id"], during
                assert during["result"]["database_saw"] == old["ip"], during
                assert during["cold"] is False and during["environment"] == last["environment"]
                break
            old, last = new, after
        else:
            pytest.fail(f"the update was Successful before the invoke, {TRIES} times")


# -- 10. a function without VPC ---------------------------------------------------------------
def test_a_function_without_vpc_config_is_active_at_once(topology: dict,
                                                         state_dir: Path) -> None:
    with functions(state_dir, "novpc", "novpc2", "halfvpc"):
        made = [create(state_dir, "novpc", *PYTHON, "--handler", "handlers.ok"),
                create(state_dir, "novpc2", *PYTHON, "--handler", "handlers.ok", *vpc("", ""))]
        for fn in made + [get(state_dir, "novpc"), get(state_dir, "novpc2")]:
            assert fn["State"] == "Active" and fn["StateReasonCode"] is None, fn
            assert fn["VpcConfig"] == {"SubnetIds": [], "SecurityGroupIds": [], "VpcId": "",
                                       "Ipv6AllowedForDualStack": False}
        reply = invoke(state_dir, "novpc", '{"n": 7}')
        assert reply["result"]["event"] == {"n": 7} and reply["eni"] is None
        assert not rows_of(state_dir, "novpc") and not rows_of(state_dir, "novpc2")
        error = refused(state_dir, "function", "create", "halfvpc", *ORDERS,
                        "--subnet-ids", "subnet-a")
        assert error["errorType"] == "InvalidParameterValueException"


# -- 9. reserved concurrency ---------------------------------------------------------------------
def test_reserved_concurrency_throttles_with_too_many_requests(topology: dict,
                                                                state_dir: Path) -> None:
    slow = (*PYTHON, "--handler", "handlers.slow", "--timeout", "10")
    with functions(state_dir, "one", "zero"):
        assert create(state_dir, "one", *slow, "--reserved-concurrency", "1")[
            "ReservedConcurrentExecutions"] == 1
        pair = [hp.start_capture("invoke", "one", "--payload", '{"sleep": 2}', "--json",
                                 state_dir=state_dir) for _ in range(2)]
        results = [(p.communicate(timeout=60), p.returncode) for p in pair]
        codes = sorted(code for _, code in results)
        assert codes == [0, 1], results
        (ok_out, _), _ = next(r for r in results if r[1] == 0)
        (no_out, _), _ = next(r for r in results if r[1] == 1)
        assert json.loads(ok_out)["result"] == "finished"
        error = json.loads(no_out)
        assert (error["errorType"], error["statusCode"]) == ("TooManyRequestsException", 429)

        create(state_dir, "zero", *slow, "--reserved-concurrency", "0")
        for _ in range(2):
            error = refused(state_dir, "invoke", "zero", "--payload", '{"sleep": 0}')
            assert (error["errorType"], error["statusCode"]) == ("TooManyRequestsException", 429)


def test_reserved_concurrency_0_set_later_throttles_a_warm_function(topology: dict,
                                                                    state_dir: Path) -> None:
    with functions(state_dir, "warm"):
        create(state_dir, "warm", *PYTHON, "--handler", "handlers.ok")
        assert invoke(state_dir, "warm")["cold"] is True  # an idle environment is left
        hp.run("function", "update", "warm", "--reserved-concurrency", "0", state_dir=state_dir)
        assert get(state_dir, "warm")["ReservedConcurrentExecutions"] == 0
        result = hp.run("invoke", "warm", "--json", state_dir=state_dir, check=False)
        assert result.returncode == 1, f"reserved concurrency 0 did not throttle: {result.stdout}"
        error = api_error(result)
        assert (error["errorType"], error["statusCode"]) == ("TooManyRequestsException", 429)


# -- 6. ENI deletion and EC2's DependencyViolation -----------------------------------------------
def test_deleted_function_eni_lingers_deleting_and_blocks_subnet_and_group_deletion(
        topology: dict, state_dir: Path) -> None:
    with functions(state_dir, "gone", "late"):
        create(state_dir, "gone", *ORDERS, *vpc("subnet-c", "sg-c"))
        wait_state(state_dir, "gone", "Active")
        [row] = rows_of(state_dir, "gone")
        error = refused(state_dir, "vpc", "delete-subnet", "subnet-c")
        assert error["errorType"] == "DependencyViolation" and row["id"] in error["errorMessage"]

        hp.run("function", "delete", "gone", state_dir=state_dir)
        [deleting] = [r for r in enis(state_dir) if r["id"] == row["id"]]
        assert deleting["status"] == "deleting", deleting
        for args in (("delete-security-group", "sg-c"), ("delete-subnet", "subnet-c")):
            error = refused(state_dir, "vpc", *args)
            assert error["errorType"] == "DependencyViolation", error
            assert row["id"] in error["errorMessage"], error
        until(lambda: [r for r in enis(state_dir) if r["id"] == row["id"]], lambda r: not r)
        hp.run("vpc", "delete-security-group", "sg-c", state_dir=state_dir)
        hp.run("vpc", "delete-subnet", "subnet-c", state_dir=state_dir)
        error = refused(state_dir, "vpc", "delete-subnet", "subnet-c")
        assert error["errorType"] == "InvalidSubnetID.NotFound"
        error = refused(state_dir, "function", "create", "late", *ORDERS,
                        *vpc("subnet-c", "sg-k"))  # a deleted subnet: refused at once
        assert error["errorType"] == "InvalidParameterValueException", error
        assert "InvalidSubnetID.NotFound" in error["errorMessage"], error


# -- 8. the controller killed with -9 and started again ------------------------------------------
def controller(state_dir: Path) -> dict:
    return hp.run_json("status", state_dir=state_dir)["controller"]


def test_controller_kill_9_keeps_traffic_and_restart_recovers_everything(
        topology: dict, state_dir: Path) -> None:
    with functions(state_dir, "kept"):
        create(state_dir, "kept", *ORDERS, *vpc("subnet-a,subnet-b", "sg-k"))
        wait_state(state_dir, "kept", "Active")
        first = invoke(state_dir, "kept")
        assert first["cold"] is True
        with holding(state_dir, "kept", DB, 1) as held:
            [before_seen] = held.reply()
            listed = hp.run_json("function", "list", state_dir=state_dir)["Functions"]
            rows = enis(state_dir)
            dataplane = hp.run_json("status", state_dir=state_dir)["dataplane"]["pid"]
            pid = controller(state_dir)["pid"]
            try:
                os.kill(pid, signal.SIGKILL)  # the supervisor starts it again
                back = until(lambda: controller(state_dir),
                             lambda c: c["alive"] and c["pid"] != pid)
                assert back["restarts"] == 1 and back["down"] is None
                [again] = held.ask("again")  # the same connection, through the dataplane
                assert again == before_seen
                stopped = hp.run("controller", "stop", state_dir=state_dir).stdout
                assert f"pid {back['pid']}" in stopped
                time.sleep(1)  # ten supervisor rounds: a stopped controller stays stopped
                assert not controller(state_dir)["alive"]
                down = hp.run("function", "list", state_dir=state_dir, check=False)
                assert down.returncode == 1 and "hyperplane controller start" in down.stderr
                assert hp.run("invoke", "kept", state_dir=state_dir, check=False).returncode == 1
            finally:
                if not controller(state_dir)["alive"]:
                    hp.run("controller", "start", state_dir=state_dir)
            status = hp.run_json("status", state_dir=state_dir)
            assert status["controller"]["alive"] and status["controller"]["pid"] != pid
            assert status["dataplane"]["pid"] == dataplane
            assert enis(state_dir) == rows
            keys = ("FunctionName", "State", "LastUpdateStatus", "VpcConfig", "Enis",
                    "Environments")
            assert [{k: f[k] for k in keys} for f in hp.run_json(
                "function", "list", state_dir=state_dir)["Functions"]] == [
                {k: f[k] for k in keys} for f in listed]
            reply = invoke(state_dir, "kept")  # the lease still holds the first environment:
            assert reply["cold"] is True and reply["environment"] != first["environment"]
            assert hp.run_json("controller", "status", "--json", state_dir=state_dir)[
                "orphan_leases"] == [int(first["environment"].removeprefix("env-"))]
            assert reply["result"]["database_saw"] in {row["ip"] for row in rows}
            assert held.ask("again") == [before_seen]


# -- 5. idle: Inactive, ENIs reclaimed unless shared with an Active function, restored ----------
def test_idle_functions_go_inactive_their_enis_go_unless_shared_and_invoke_restores(
        topology: dict, state_dir: Path) -> None:
    names = ("idle", "busy", "alone")
    with functions(state_dir, *names):
        for name, group in (("idle", "sg-i"), ("busy", "sg-i"), ("alone", "sg-j")):
            create(state_dir, name, *ORDERS, *vpc("subnet-a", group))
        for name in names:
            wait_state(state_dir, name, "Active")
        [shared], [single] = rows_of(state_dir, "idle"), rows_of(state_dir, "alone")
        offset = hp.run_json("clock", "show", state_dir=state_dir)["offset"]
        hp.run("clock", "advance", "8d", state_dir=state_dir)
        invoke(state_dir, "busy")  # busy was invoked 7 days before the end, the others 15
        events = hp.run_json("clock", "advance", "7d", state_dir=state_dir)["events"]
        assert hp.run_json("clock", "show", state_dir=state_dir)["offset"] - offset == 15 * 86400
        assert "idle Inactive" in events and "alone Inactive" in events, events
        assert "busy Inactive" not in events
        for name, state in (("idle", "Inactive"), ("alone", "Inactive"), ("busy", "Active")):
            fn = get(state_dir, name)
            assert fn["State"] == state, fn
            if state == "Inactive":
                assert fn["StateReasonCode"] == "Idle", fn
        rows = {r["id"]: r for r in enis(state_dir)}
        assert rows[shared["id"]]["status"] == "in-use"  # busy still uses it
        assert rows[shared["id"]]["functions"] == ["busy"]
        assert rows[single["id"]]["status"] == "deleting"
        until(lambda: [r for r in enis(state_dir) if r["id"] == single["id"]], lambda r: not r)

        for name in ("idle", "alone"):
            error = refused(state_dir, "invoke", name)
            assert error["errorType"] == "ResourceNotReadyException", error
            fn = get(state_dir, name)
            assert (fn["State"], fn["StateReasonCode"]) == ("Pending", "Restoring"), fn
        [remade] = [r for r in enis(state_dir) if r["security_groups"] == ["sg-j"]]
        assert remade["status"] == "creating" and remade["functions"] == ["alone"]
        for name in ("idle", "alone"):
            wait_state(state_dir, name, "Active")
        [restored] = rows_of(state_dir, "alone")
        assert restored["status"] == "in-use"
        for name, row in (("idle", shared), ("alone", restored)):
            reply = invoke(state_dir, name)
            assert reply["eni"] == row["id"] and reply["result"]["database_saw"] == row["ip"]
        assert sorted(rows_of(state_dir, "idle")[0]["functions"]) == ["busy", "idle"]
