"""The control plane at work: the model's changes made real (side effects).

``Controller`` owns the running topology's records while the controller process
lives: it loads them from the state database (``state``), keeps the pure
``lifecycle.Model`` and the emulated ``Clock``, and after every change makes
the kernel objects that appeared (ENI links, environment namespaces), removes
those that went, starts and stops environment agents through the zygote,
hands the dataplane its whole configuration as one snapshot (``snapshot``),
re-renders hosts' firewalls when group membership changed, and records
everything in the database before it exists (so ``cleanup`` can find it).

Every change runs on one thread, the kernel worker (``serial``): pyroute2's
netlink sockets must stay with the thread that opened them, and one writer
needs no finer locking.  Invocations run in the requests' own threads, so
environments serve concurrently; only taking and giving back an environment
passes through the worker.  ``busy`` holds the environments serving an
invocation or leased (``exec --function``): the model never reaps those.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

from hyperplane import jsonline
from hyperplane.controller import agents, network
from hyperplane.controller.clock import Clock
from hyperplane.controller.functions import LEGACY, FunctionRecord, file_record
from hyperplane.controller.lifecycle import IN_USE, Effects, Limits, Model
from hyperplane.controller.snapshot import snapshot
from hyperplane.dataplane.config import Snapshot
from hyperplane.errors import ApiError, UnreachableError
from hyperplane.fabric import egress
from hyperplane.fabric.desired import eni_objects, env_objects
from hyperplane.fabric.objects import plan
from hyperplane.kernel import build, netlink, procs, state, vpcservices
from hyperplane.model import edits, ipam, names, settings, timing
from hyperplane.model.enis import Eni
from hyperplane.model.envs import Env, choose_subnet, eni_for
from hyperplane.model.parser import parse_topology
from hyperplane.model.topology import Function, Topology

READY_TIMEOUT = 15.0
WORKER = "hp-kernel"
BUILD_CHUNK = 64  # environments' kernel objects per build
GROUP = 256  # environments built, handed to the dataplane and to the zygote at a time
RESYNC_EVERY = 5.0  # seconds: the whole snapshot again even when nothing changed
SESSIONS_EVERY = 1.0  # seconds between two looks at the ENIs' session counts
SPARES = 8  # environments' namespaces built ahead, one per idle tick


class Controller:
    def __init__(self) -> None:
        data = state.load()
        if data is None:
            raise RuntimeError(f"nothing is up (no state in {state.state_dir()})")
        self.data = data
        self.topology = parse_topology(data["document"], data["source"])
        self.lock = threading.RLock()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix=WORKER)
        self.busy: dict[int, int] = {}  # env index -> holders
        self.orphans: set[int] = set()  # held by leases of a controller before a restart
        self.clock = Clock(data.get("clock", {}).get("offset", 0.0))
        cfg = self.topology.settings
        self.model = Model(
            self.topology, [FunctionRecord.from_dict(f) for f in data.get("functions", [])],
            [Eni.from_dict(e) for e in data["enis"]], [Env.from_dict(e) for e in data["envs"]],
            timing.timing(cfg), Limits(timing.enis_per_vpc(cfg),
                                       settings.dataplane(cfg)["eni_connection_limit"],
                                       timing.default_networking(cfg)))
        self.built_enis = {e.id: e for e in self.model.enis}  # what the kernel has
        # the topology the static fabric was built for (``up`` built the file's)
        self.built_live = network.live(self) if data.get("seeded") else self.topology
        self.egress_key = _egress_key(self.built_live)
        self.last_push = 0.0
        self.sessions_asked, self.last_sessions = 0.0, {}

    def serial(self, fn: Callable, *args: object) -> object:
        """Run ``fn`` on the kernel worker thread (directly when already on it)."""
        if threading.current_thread().name.startswith(WORKER):
            return fn(*args)
        return self.worker.submit(fn, *args).result()

    # -- records -----------------------------------------------------------------------
    def save(self) -> None:
        self.data["functions"] = [f.to_dict() for f in self.model.functions.values()]
        self.data["enis"] = [e.to_dict() for e in self.model.enis]
        self.data["envs"] = [e.to_dict() for e in self.model.envs]
        self.data["clock"] = {"offset": self.clock.offset}
        state.save(self.data)

    def seed(self) -> None:
        """First start: the topology file's functions are created as if by the API;
        a restart: the recorded ENIs are checked."""
        self.serial(self._seed)

    def _seed(self) -> None:
        self.data["procs"]["controller"] = os.getpid()  # ours, whatever `up` wrote meanwhile
        if self.data.get("seeded"):
            # a restart: every recorded ENI is made again if a crash came between recording
            # and building it (creation tolerates what exists)
            self.built_enis = {}
            self.drop_spares()
            self.orphans = {e.index for e in self.model.envs if state.env_held(e.index)}
            self.commit(Effects())
            return
        with self.lock:
            now = self.clock.now()
            for function in self.topology.functions:
                self.model.create(file_record(function, self.topology.settings), now)
            # the file's functions only seed the controller: from now on it holds them
            document = dict(edits.strip_functions(self.data["document"]),
                            _layout=self.topology.layout.to_dict())
            self.data["document"] = document
            self.retopology(parse_topology(document, self.data["source"]))
            self.data["seeded"] = True
            self.commit(Effects(changed=True))

    @contextmanager
    def changing(self) -> Iterator[float]:
        """A change under the lock: tick, make it real, record it."""
        with self.lock:
            now = self.clock.now()
            try:
                yield now
            finally:
                self.commit(self.model.tick(now, self.held(), {}))

    def retopology(self, topology: Topology) -> None:
        """The recorded document changed (``sg authorize``): the model follows."""
        self.topology = self.model.topology = topology

    def commit_now(self) -> None:
        self.commit(Effects())

    # -- making the model real ------------------------------------------------------------
    def commit(self, effects: Effects) -> None:
        self.save()  # recorded before anything is made
        if effects.reap:
            self.reap(effects.reap - self.held())
        self.follow_functions()
        self.sync_enis()
        self.push()
        self.save()

    def follow_functions(self) -> None:
        """Lambda's egress to the emulated internet exists while a function has no VPC."""
        now_live = network.live(self)
        key = _egress_key(now_live)
        if key != self.egress_key:
            network.sync_fabric(self, self.built_live, now_live)
            self.egress_key = key
        self.built_live = now_live

    def sync_enis(self) -> None:
        wanted = {e.id: e for e in self.model.enis}
        old = frozenset(o for e in self.built_enis.values() if e.id not in wanted
                        for o in eni_objects(self.topology, e))
        new = frozenset(o for e in wanted.values() if e.id not in self.built_enis
                        for o in eni_objects(self.topology, e))
        if old or new:
            build.apply(plan(old, frozenset()) + plan(frozenset(), new))
        self.built_enis = wanted

    def push(self) -> None:
        reply = dataplane_request({"op": "config", "config": self.snapshot().to_dict()})
        if not reply.get("ok"):
            raise RuntimeError(f"the dataplane refused its configuration: {reply.get('error')}")
        vpcservices.follow_membership(self.data, self.topology, self.model.enis)
        self.last_push = time.monotonic()

    def snapshot(self) -> Snapshot:
        """The dataplane's whole desired configuration."""
        return snapshot(network.live(self), self.model.enis, self.model.envs)

    def reap(self, indices: set[int]) -> None:
        """Stop and remove idle environments."""
        gone = [e for e in self.model.envs if e.index in indices]
        if not gone:
            return
        for env in gone:
            pid = self.data["procs"].pop(env.id, None)
            if pid:
                procs.stop(pid, grace=AGENT_GRACE)
        self.model.forget_envs(indices)
        self.push()  # the dataplane lets go of the links first
        for env in gone:
            # the link first, synchronously: a namespace dies asynchronously, and its veth
            # would still hold the name when the index is used again
            self.drop_namespace(env)
            for leftover in (state.env_socket(env.index), str(state.env_lock(env.index))):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass

    # -- environments ----------------------------------------------------------------------
    def new_envs(self, fn: FunctionRecord, count: int, now: float) -> list[Env]:
        """Record, build and start ``count`` environments (under the lock), ``GROUP`` at a
        time: the zygote forks one group's agents while the next group is built."""
        function = self.model.runtime_function(fn)
        made: list[Env] = []
        spawning: list[tuple[list[Env], Future]] = []
        spawner = ThreadPoolExecutor(1) if count > GROUP else None  # a cold start: inline
        try:
            for start in range(0, count, GROUP):
                group = self.record_envs(fn, function, min(GROUP, count - start), now)
                made += group
                self.sync_enis()
                self.push()  # the dataplane knows their links before their code runs
                args = (agents.spawn, self.topology, fn, function, group)
                spawning.append((group, spawner.submit(*args) if spawner else _done(*args)))
        finally:
            try:
                self.record_agents(spawning)
            finally:
                if spawner:
                    spawner.shutdown()
        return made

    def record_envs(self, fn: FunctionRecord, function: Function, count: int,
                    now: float) -> list[Env]:
        """``count`` environments recorded, then their namespaces built (spares are)."""
        made: list[Env] = []
        ready: set[int] = set()  # spare environments: built already
        for index, ip, built in self.slots(count):
            if built:
                ready.add(index)
                self.data["spare"].pop(0)  # slots() lists the spares first, in order
            subnet_id = choose_subnet(function, self.model.envs)
            if fn.networking == LEGACY and subnet_id is not None:
                eni: Eni | None = self.model.legacy_eni(fn, subnet_id, index, now)
            else:
                eni = eni_for(function, subnet_id, self.model.enis)
            env = Env(index, fn.name, ip, subnet_id, eni.id if eni else None, now, created=now)
            self.model.envs.append(env)
            if not built:
                self.data["namespaces"].append(env.netns)
            made.append(env)
        self.save()
        fresh = [env for env in made if env.index not in ready]
        for start in range(0, len(fresh), BUILD_CHUNK):
            objs = frozenset(o for env in fresh[start:start + BUILD_CHUNK]
                             for o in env_objects(env))
            build.apply(plan(frozenset(), objs))
        return made

    def record_agents(self, spawning: list[tuple[list[Env], Future]]) -> None:
        """The agents' process ids, recorded for every group the zygote started (also when
        another group failed); then the first failure is raised."""
        failure: BaseException | None = None
        for group, future in spawning:
            try:
                pids = future.result()
            except Exception as exc:  # noqa: BLE001 - recorded, raised below
                failure = failure or exc
                continue
            for env, pid in zip(group, pids, strict=True):
                self.data["procs"][env.id] = pid
        self.save()
        if failure is not None:
            raise failure

    # -- spare environments: namespaces built ahead of cold starts ---------------------------
    def slots(self, count: int) -> list[tuple[int, str, bool]]:
        """``count`` environments' indices and addresses: spare ones first (built: True),
        then the lowest ones no environment or spare has, found in one pass. The caller
        removes each spare from the list as it records its environment."""
        spare = self.data.setdefault("spare", [])
        taken = [(s["index"], s["ip"], True) for s in spare[:count]]
        return taken + [(i, ip, False) for i, ip in self.fresh_slots(count - len(taken))]

    def fresh_slots(self, count: int) -> list[tuple[int, str]]:
        """The ``count`` lowest indices and addresses no environment or spare has."""
        if count <= 0:
            return []
        spare = self.data.setdefault("spare", [])
        indices = {e.index for e in self.model.envs} | {s["index"] for s in spare}
        free = (i for i in range(len(indices) + count) if i not in indices)
        ips = {e.ip for e in self.model.envs} | {s["ip"] for s in spare}
        return list(zip(free, ipam.allocate_many(names.ENV_POOL, ips, count), strict=False))

    def top_up(self) -> None:
        """Build one spare environment (namespace, link, address, routes) if fewer than
        ``SPARES`` are ready: a cold start then only records, pushes and starts its agent."""
        spare = self.data.setdefault("spare", [])
        if len(spare) >= SPARES:
            return
        [(index, ip)] = self.fresh_slots(1)
        env = Env(index, "", ip, None, None)
        self.data["namespaces"].append(env.netns)
        spare.append({"index": index, "ip": ip})
        self.save()  # recorded before it exists
        try:
            build.apply(plan(frozenset(), frozenset(env_objects(env))))
        except Exception:
            spare.remove({"index": index, "ip": ip})
            self.drop_namespace(env)
            raise

    def drop_spares(self) -> None:
        """After a restart: spares may be half built; they are made again, fresh."""
        for taken in self.data.get("spare", []):
            self.drop_namespace(Env(taken["index"], "", taken["ip"], None, None))
        self.data["spare"] = []
        self.save()

    def drop_namespace(self, env: Env) -> None:
        netlink.delete_link(names.PLANE_NS, env.plane_link)
        netlink.forget_link(env.netns, "eth0")
        netlink.remove_netns(env.netns)
        self.data["namespaces"] = [n for n in self.data["namespaces"] if n != env.netns]

    def acquire(self, name: str) -> tuple[Env, bool, FunctionRecord]:
        """An environment of ``name`` held for one invocation or lease: (env, cold, fn)."""
        env, cold, fn = self.serial(self._take, name)
        if not cold:
            return env, cold, fn
        self.wait_legacy_eni(env)
        if not procs.wait_until(lambda: os.path.exists(state.env_socket(env.index)),
                                 READY_TIMEOUT, 0.002):
            self.release(env)
            raise RuntimeError(f"environment {env.id} did not start; see {state.log(env.id)}")
        return env, True, fn

    def _take(self, name: str) -> tuple[Env, bool, FunctionRecord]:
        with self.lock:
            now = self.clock.now()
            try:
                fn = self.model.admit(name, now)
            except ApiError:
                self.commit(self.model.tick(now, self.held(), {}))  # a restore began
                raise
            running = sum(1 for e in self.model.envs if e.function == name and e.index in self.busy)
            if fn.reserved_concurrency is not None and running >= fn.reserved_concurrency:
                raise ApiError("TooManyRequestsException", "Rate Exceeded.", 429,
                               Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
            fn.last_invoked = now
            for env in self.model.envs:
                if env.function == name and env.index not in self.busy \
                        and env.index not in self.orphans \
                        and not self.model.outdated(env, now):
                    self.busy[env.index] = 1
                    return env, False, fn
            env = self.new_envs(fn, 1, now)[0]
            self.busy[env.index] = 1
            return env, True, fn

    def held(self) -> set[int]:
        """Environments in use: by this controller's holders, and by leases taken before
        it restarted, until they let go (``state.env_held``)."""
        if self.orphans:
            self.orphans = {i for i in self.orphans if state.env_held(i)}
        return set(self.busy) | self.orphans

    def wait_legacy_eni(self, env: Env) -> None:
        """Legacy mode: the cold start waits for its ENI's create-and-attach delay."""
        eni = next((e for e in self.model.enis if e.id == env.eni_id
                    and e.legacy_env == env.index), None)
        if eni is None:
            return
        while self.clock.now() < eni.ready_at:
            time.sleep(min(0.01, max(0.0, eni.ready_at - self.clock.now())))
        self.serial(self._tick)

    def release(self, env: Env) -> None:
        self.serial(self._release, env)

    def _release(self, env: Env) -> None:
        with self.lock:
            count = self.busy.get(env.index, 0) - 1
            if count > 0:
                self.busy[env.index] = count
                return
            self.busy.pop(env.index, None)
            now = self.clock.now()
            self.model.envs = [replace(e, last_used=now) if e.index == env.index else e
                               for e in self.model.envs]
            current = next((e for e in self.model.envs if e.index == env.index), None)
            if current is not None and self.model.outdated(current, now):
                self.commit(Effects(reap={env.index}))
            else:
                self.save()

    def admit(self, name: str) -> None:
        """The invoke gate alone (an asynchronous invocation is refused at once)."""
        with self.lock:
            now = self.clock.now()
            try:
                self.model.admit(name, now)
            except ApiError:
                self.commit(self.model.tick(now, self.held(), {}))  # a restore began
                raise

    def invoke_quietly(self, name: str, payload: object) -> None:
        """An asynchronous invocation: its outcome goes to the environment's log only."""
        try:
            self.invoke(name, payload)
        except Exception:  # noqa: BLE001 - nobody waits for it; AWS would retry twice
            pass

    def invoke(self, name: str, payload: object, log_tail: bool = False,
               client_context: str | None = None,
               on_line: Callable[[dict], None] | None = None) -> dict:
        """The agent's reply; with ``on_line``, a streamed response's lines (``stream``,
        ``chunk``) go there as they come (a caller that went away: they are drained)."""
        env, cold, fn = self.acquire(name)
        message = {"payload": payload, "request_id": str(uuid.uuid4()), "log_tail": log_tail,
                   "client_context": client_context, "stream": on_line is not None}
        try:
            procs.wait_until(lambda: os.path.exists(state.env_socket(env.index)),
                             READY_TIMEOUT, 0.002)
            reply = jsonline.relay(state.env_socket(env.index), message, fn.timeout + 10,
                                   on_line)
        except (UnreachableError, OSError) as exc:
            raise RuntimeError(f"environment {env.id} of {name} did not answer ({exc}); "
                               f"see {state.log(env.id)}") from None
        finally:
            self.release(env)
        if reply.get("errorType") in EFS_ERRORS:  # Lambda answers these as API errors
            raise ApiError(reply["errorType"], reply.get("errorMessage", ""), 408)
        if reply.get("errorType") == TOO_LARGE:  # the agent measured the payload
            raise ApiError(TOO_LARGE, reply.get("errorMessage", ""), 413)
        reply.update(cold=cold, environment=env.id, eni=env.eni_id, subnet=env.subnet_id)
        return reply

    # -- time ----------------------------------------------------------------------------------
    def tick(self) -> None:
        self.serial(self._tick)

    def _tick(self) -> None:
        with self.lock:
            now = self.clock.now()
            effects = self.model.tick(now, self.held(), self.sessions())
            if effects.changed or effects.reap or effects.events:
                self.commit(effects)
            elif time.monotonic() - self.last_push > RESYNC_EVERY:
                self.push()  # constant work: the whole configuration, changed or not
            else:
                self.top_up()  # idle: one more spare environment, if fewer than SPARES

    def sessions(self) -> dict[str, int]:
        """Sessions per ENI (for the connection-limit spill), asked at most once a second."""
        if time.monotonic() - self.sessions_asked < SESSIONS_EVERY:
            return self.last_sessions
        self.sessions_asked = time.monotonic()
        if not any(e.status == IN_USE for e in self.model.enis):
            return {}
        try:
            enis = dataplane_request({"op": "stats"})["stats"]["enis"]
        except (UnreachableError, OSError):
            return {}
        self.last_sessions = {eni_id: c.get("sessions_active", 0) for eni_id, c in enis.items()}
        return self.last_sessions

    def advance(self, seconds: float) -> dict:
        return self.serial(self._advance, seconds)

    def _advance(self, seconds: float) -> dict:
        with self.lock:
            self.clock.advance(seconds)
            now = self.clock.now()
            effects = self.model.tick(now, self.held(), self.sessions())
            self.commit(effects)
        return {"now": now, "offset": self.clock.offset, "events": effects.events}


def _egress_key(topology: Topology) -> tuple[bool, bool]:
    return egress.needs_internet(topology), egress.has_egress_port(topology)


EFS_ERRORS = ("EFSMountConnectivityException", "EFSMountFailureException")
TOO_LARGE = "RequestEntityTooLargeException"  # a payload over 6 MiB, refused by the agent
AGENT_GRACE = 3.0  # seconds: an agent's shutdown gives extensions 2 s (lambda_vm.extensions)


def _done(fn: Callable, *args: object) -> Future:
    """``fn(*args)`` run now, as a finished future."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - the future carries it
        future.set_exception(exc)
    return future


def dataplane_request(message: dict) -> dict:
    return jsonline.request(state.control_socket(), message)
