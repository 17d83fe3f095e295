"""The control plane's model: functions, ENIs and environments over time (pure).

``Model`` holds the records (``FunctionRecord``, ``Eni``, ``Env``) and applies
Lambda's documented rules to them; it makes no kernel object and reads no clock:
every operation takes ``now`` (the controller's one emulated clock, in seconds)
and the service (``controller.service``) turns the changed records into kernel
objects, processes and a dataplane snapshot.

* ``create`` / ``update`` / ``delete``: the API.  A VPC configuration is applied
  by ``_provision``: one ENI per (subnet, security-group set), shared; an ENI
  of the key that exists (even one waiting for deletion) is reused, a new one
  is ``creating`` until ``now + eni_create``.  Failures are AWS's reason codes.
* ``admit``: the invoke gate (``ResourceNotReadyException`` while Pending, a
  restore from Inactive, the failed function's invoke error).
* ``tick``: time passes.  ENIs become ready, provisioning completes (Pending ->
  Active, InProgress -> Successful), idle functions go Inactive, ENIs nobody
  uses are deleted after ``eni_delete``, idle environments are reaped after
  ``env_idle`` and any environment after its ``env_max_lifetime`` (a busy one once its
  invocation is over: ``outdated``), and a key whose ENIs are all at the connection
  limit gets one more.
* Legacy mode (before 2019): no shared ENIs; ``legacy_eni`` makes one ENI per new
  environment, at cold start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hyperplane.controller.functions import (
    ACTIVE,
    FAILED,
    HYPERPLANE,
    IN_PROGRESS,
    INACTIVE,
    INVOKE_ERRORS,
    LEGACY,
    PENDING,
    REASONS,
    SUCCESSFUL,
    UPDATE_SETTLE,
    FunctionRecord,
    VpcSpec,
    arn,
    check_vpc_exists,
    check_vpc_request,
    not_found,
    not_ready,
    update_in_progress,
)
from hyperplane.errors import ApiError
from hyperplane.model import ipam, names
from hyperplane.model.enis import Eni, EniKey, eni_id, used_addresses
from hyperplane.model.envs import Env
from hyperplane.model.timing import Timing
from hyperplane.model.topology import Function, Topology, VpcConfig

CREATING, IN_USE, DELETING = "creating", "in-use", "deleting"
RETIRING = ("handler", "code", "memory", "timeout", "runtime", "environment")  # new envs


@dataclass
class Limits:
    enis_per_vpc: int = 250
    connection_limit: int = 65000
    default_networking: str = HYPERPLANE


@dataclass
class Effects:
    """What a change asks of the kernel and processes."""

    reap: set[int] = field(default_factory=set)   # environments to stop and remove
    changed: bool = False                          # ENIs or environments came or went
    events: list[str] = field(default_factory=list)


class Model:
    def __init__(self, topology: Topology, functions: list[FunctionRecord], enis: list[Eni],
                 envs: list[Env], timing: Timing, limits: Limits) -> None:
        self.topology, self.timing, self.limits = topology, timing, limits
        self.functions = {f.name: f for f in sorted(functions, key=lambda f: f.seq)}
        self.enis, self.envs = list(enis), list(envs)
        self.region = "us-east-1"  # echoed in the ARNs of error messages

    # -- lookups -----------------------------------------------------------------------
    def function(self, name: str, account: str = "") -> FunctionRecord:
        """The function ``name`` (of ``account``, when one is asked for), else AWS's 404."""
        fn = self.functions.get(name)
        if fn is None or (account and fn.account and fn.account != account):
            raise not_found(account or self.topology.account, name, self.region)
        return fn

    def arn(self, fn: FunctionRecord) -> str:
        return arn(fn.account or self.topology.account, fn.name, self.region)

    def runtime_function(self, fn: FunctionRecord) -> Function:
        """The ``topology.Function`` environments are made from (the applied config)."""
        config = None
        if fn.vpc is not None and fn.vpc_id is not None:
            config = VpcConfig(fn.vpc.subnet_ids, fn.vpc.security_group_ids, fn.vpc_id,
                               fn.vpc.ipv6_allowed_for_dual_stack)
        return Function(fn.name, fn.code, fn.handler, config, fn.memory, fn.timeout)

    def keys(self, spec: VpcSpec, vpc_id: str) -> list[EniKey]:
        return [EniKey(vpc_id, s, spec.groups) for s in dict.fromkeys(spec.subnet_ids)]

    def resolve(self, spec: VpcSpec) -> tuple[str | None, str | None, str]:
        """(VPC id, None, '') or (None, reason code, the offending id)."""
        vpc_ids = []
        for subnet_id in spec.subnet_ids:
            try:
                vpc_ids.append(self.topology.subnet(subnet_id).vpc_id)
            except KeyError:
                return None, "InvalidSubnet", subnet_id
        if len(set(vpc_ids)) > 1:
            return None, "InvalidConfiguration", ",".join(spec.subnet_ids)
        vpc = self.topology.vpc(vpc_ids[0])
        known = {g.id for g in vpc.security_groups}
        for group_id in spec.security_group_ids:
            if group_id not in known:
                return None, "InvalidSecurityGroup", group_id
        return vpc_ids[0], None, ""

    # -- API -----------------------------------------------------------------------------
    def create(self, fn: FunctionRecord, now: float) -> FunctionRecord:
        if fn.name in self.functions:
            raise ApiError("ResourceConflictException", f"Function already exist: {fn.name}",
                           409)
        fn.networking = fn.networking or self.limits.default_networking
        target = check_vpc_request(fn.vpc)
        check_vpc_exists(self.topology, target)
        fn.vpc, fn.vpc_id, fn.last_invoked = None, None, now
        fn.seq = max((f.seq for f in self.functions.values()), default=0) + 1
        if target is not None and not fn.account:
            fn.account = self.topology.vpc_account(self.topology.subnet(
                target.subnet_ids[0]).vpc_id)
        fn.account = fn.account or self.topology.account
        fn.touch(now)
        self.functions[fn.name] = fn
        fn.set_state(PENDING, "Creating")
        self._start(fn, target, now)
        return fn

    def update(self, name: str, now: float, vpc: VpcSpec | None | bool = False,
               **changes: object) -> FunctionRecord:
        """Change code settings at once, and the VPC configuration (``vpc`` not False)
        by provisioning while the old one keeps serving."""
        fn = self.function(name)
        if fn.state == PENDING:
            raise ApiError("ResourceConflictException", not_ready(PENDING), 409)
        if fn.last_update_status == IN_PROGRESS:
            raise update_in_progress(self.arn(fn))
        if vpc is not False:  # checked before anything changes
            vpc = check_vpc_request(vpc if isinstance(vpc, VpcSpec) else None)
            check_vpc_exists(self.topology, vpc)
        for key, value in changes.items():
            if value is not None:
                setattr(fn, key, value)
        if any(changes.get(k) is not None for k in RETIRING):
            self._retire_envs(fn)
        fn.touch(now)
        if vpc is not False and vpc != fn.vpc:
            fn.set_update(IN_PROGRESS, "Creating")
            self._start(fn, vpc if isinstance(vpc, VpcSpec) else None, now)
        else:  # AWS shows every update InProgress for a moment
            fn.set_update(IN_PROGRESS, None)
            fn.extra["settled_at"] = now + UPDATE_SETTLE
        return fn

    def delete(self, name: str) -> Effects:
        self.function(name)
        del self.functions[name]
        effects = Effects(changed=True)
        effects.reap |= {e.index for e in self.envs if e.function == name}
        return effects

    def admit(self, name: str, now: float) -> FunctionRecord:
        """The invoke gate: the function as invocations see it, or AWS's error."""
        fn = self.function(name)
        if fn.state == ACTIVE:
            return fn
        if fn.state == INACTIVE:
            fn.set_state(PENDING, "Restoring")
            fn.extra["restoring"] = True  # its ENIs are made again: that takes eni_create
            fn.extra["not_before"] = now + self.timing.pick("eni_create", f"{fn.name}@{now}")
            self._start(fn, fn.vpc, now)
            raise ApiError("ResourceNotReadyException", not_ready(INACTIVE), 502)
        if fn.state == FAILED and fn.state_reason_code in INVOKE_ERRORS:
            raise ApiError(INVOKE_ERRORS[fn.state_reason_code], fn.state_reason or "", 502)
        if fn.state == PENDING:
            raise ApiError("ResourceConflictException", not_ready(PENDING), 409)
        raise ApiError("ResourceNotReadyException", not_ready(fn.state), 502)

    # -- provisioning ----------------------------------------------------------------------
    def _start(self, fn: FunctionRecord, target: VpcSpec | None, now: float) -> None:
        fn.target, fn.provisioning = target, True
        fn.extra.pop("target_vpc_id", None)
        if target is not None:
            vpc_id, code, ids = self.resolve(target)
            if code is None and fn.networking != LEGACY:
                code = self._ensure_enis(fn, self.keys(target, vpc_id), now)
            if code is not None:
                self._fail(fn, code, ids)
                return
            fn.extra["target_vpc_id"] = vpc_id
        self._complete_if_ready(fn, now)

    def _ensure_enis(self, fn: FunctionRecord, keys: list[EniKey], now: float) -> str | None:
        made: list[Eni] = []
        for key in keys:
            if any(e.key == key and e.legacy_env is None for e in self.enis):
                continue
            code = self._new_eni(fn, key, now, made)
            if code is not None:
                self.enis = [e for e in self.enis if e not in made]
                return code
        return None

    def _new_eni(self, fn: FunctionRecord, key: EniKey, now: float, made: list[Eni],
                 spill: int = 0, legacy_env: int | None = None) -> str | None:
        if sum(1 for e in self.enis if e.key.vpc_id == key.vpc_id) >= self.limits.enis_per_vpc:
            return "EniLimitExceeded"
        subnet = self.topology.subnet(key.subnet_id)
        try:
            ip = ipam.allocate_in_subnet(subnet.cidr,
                                         used_addresses(self.topology, self.enis, subnet.id))
        except ipam.AddressExhaustedError:
            return "SubnetOutOfIPAddresses"
        index = self._free_index()
        account = self.topology.vpc(key.vpc_id).network.account or self.topology.account
        extra = "" if spill == 0 and legacy_env is None else f"/{spill}/{legacy_env}/{index}"
        ident = eni_id(account, key, extra)
        delay = self.timing.pick("legacy_eni_attach" if legacy_env is not None
                                 else "eni_create", ident)
        eni = Eni(ident, index, key, ip, names.mac(names.MAC_ENI, index), subnet.cidr,
                  (fn.name,), CREATING, now + delay, None, spill, legacy_env)
        self.enis.append(eni)
        made.append(eni)
        return None

    def _free_index(self) -> int:
        taken = {e.index for e in self.enis}
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def _fail(self, fn: FunctionRecord, code: str, ids: str) -> None:
        asked = fn.target
        fn.target, fn.provisioning = None, False
        fn.extra.pop("not_before", None)
        fn.extra.pop("target_vpc_id", None)
        updating = fn.last_update_status == IN_PROGRESS
        if updating:                     # an update failed: the old configuration stays
            fn.set_update("Failed", code, ids=repr(ids))
        if fn.state == ACTIVE:
            return
        if fn.extra.pop("restoring", False):
            fn.set_state(INACTIVE, code, ids=repr(ids))
            return
        fn.set_state(FAILED, code, ids=repr(ids))
        if not updating:
            fn.vpc, fn.vpc_id = asked, None  # shown as asked; nothing of it exists

    def _ready_keys(self, fn: FunctionRecord) -> bool:
        if fn.target is None or fn.networking == LEGACY:
            return True
        vpc_id = fn.extra.get("target_vpc_id")
        for key in self.keys(fn.target, vpc_id):
            if not any(e.key == key and e.legacy_env is None and e.status == IN_USE
                       for e in self.enis):
                return False
        return True

    def _complete_if_ready(self, fn: FunctionRecord, now: float) -> bool:
        if not fn.provisioning or not self._ready_keys(fn) \
                or now < fn.extra.get("not_before", 0.0):
            return False
        fn.extra.pop("not_before", None)
        changed = fn.vpc != fn.target
        fn.vpc, fn.vpc_id = fn.target, fn.extra.pop("target_vpc_id", None)
        fn.target, fn.provisioning = None, False
        if fn.extra.pop("restoring", False):
            fn.last_invoked = now  # idle again counts from the restore
        if changed:
            self._retire_envs(fn)
        if fn.last_update_status == IN_PROGRESS:
            fn.set_update(SUCCESSFUL, None)
        fn.set_state(ACTIVE, None)
        return True

    # -- time --------------------------------------------------------------------------------
    def tick(self, now: float, busy: set[int], sessions: dict[str, int]) -> Effects:
        effects = Effects()
        for i, eni in enumerate(self.enis):
            if eni.status == CREATING and eni.ready_at <= now:
                self.enis[i] = replace(eni, status=IN_USE)
                effects.changed = True
        self._idle_functions(now, effects)
        self._retire_enis(now, effects)  # before completing: it revives ENIs wanted again
        completed = [fn for fn in self.functions.values() if self._complete_if_ready(fn, now)]
        if completed:
            effects.changed = True
            effects.events += [f"{fn.name} {fn.state}" for fn in completed]
            self._retire_enis(now, effects)  # what the completed changes let go of
        self._settle_updates(now)
        self._reap_envs(now, busy, effects)
        self._spill(now, sessions, effects)
        return effects

    def _settle_updates(self, now: float) -> None:
        """An update without a VPC change ends Successful a moment after it began."""
        for fn in self.functions.values():
            settled = fn.extra.get("settled_at")
            if settled is not None and settled <= now and not fn.provisioning:
                fn.extra.pop("settled_at")
                if fn.last_update_status == IN_PROGRESS:
                    fn.set_update(SUCCESSFUL, None)

    def _idle_functions(self, now: float, effects: Effects) -> None:
        idle = self.timing.pick("function_idle", "")
        for fn in self.functions.values():
            if fn.state == ACTIVE and not fn.provisioning and fn.vpc is not None \
                    and now - fn.last_invoked >= idle:
                fn.set_state(INACTIVE, "Idle")
                effects.reap |= {e.index for e in self.envs if e.function == fn.name}
                effects.events.append(f"{fn.name} Inactive")

    def users(self) -> dict[EniKey, tuple[str, ...]]:
        """Every ENI key some function needs (applied or being applied), with its users."""
        wanted: dict[EniKey, list[str]] = {}
        for fn in self.functions.values():
            if fn.networking == LEGACY or (fn.state in (INACTIVE, FAILED) and not fn.provisioning):
                continue
            specs = [(fn.vpc, fn.vpc_id)] if fn.state != INACTIVE else []
            if fn.provisioning:
                specs.append((fn.target, fn.extra.get("target_vpc_id")))
            for spec, vpc_id in specs:
                if spec is None or vpc_id is None:
                    continue
                for key in self.keys(spec, vpc_id):
                    if fn.name not in wanted.setdefault(key, []):
                        wanted[key].append(fn.name)
        return {key: tuple(fns) for key, fns in wanted.items()}

    def _retire_enis(self, now: float, effects: Effects) -> None:
        wanted = self.users()
        env_enis = {e.eni_id for e in self.envs}
        kept = []
        for eni in self.enis:
            if eni.legacy_env is not None:  # its environment's, by id (indices are reused)
                users = (eni.functions if eni.id in env_enis else ())
            else:
                users = wanted.get(eni.key, ())
            if users and eni.status == DELETING:
                eni = replace(eni, status=IN_USE, delete_at=None)
            elif not users and eni.status != DELETING:
                delay = self.timing.pick("eni_delete", eni.id)
                eni = replace(eni, status=DELETING, delete_at=now + delay)
                effects.events.append(f"{eni.id} deleting")
            if users:
                eni = replace(eni, functions=users)
            if eni.status == DELETING and eni.delete_at is not None and eni.delete_at <= now:
                effects.changed = True
                effects.events.append(f"{eni.id} deleted")
                continue
            kept.append(eni)
        self.enis = kept

    def _reap_envs(self, now: float, busy: set[int], effects: Effects) -> None:
        idle = self.timing.pick("env_idle", "")
        for env in self.envs:
            if env.index in busy:
                continue
            if self.outdated(env, now) or now - env.last_used >= idle:
                effects.reap.add(env.index)

    def outdated(self, env: Env, now: float | None = None) -> bool:
        """An environment its function no longer runs in (changed, inactive, deleted), or,
        with ``now``, one past its maximum lifetime."""
        fn = self.functions.get(env.function)
        return fn is None or fn.state != ACTIVE or env.stale or \
            (now is not None and self.expired(env, now))

    def expired(self, env: Env, now: float) -> bool:
        """Past its ``env_max_lifetime`` (each environment its own, from its id and birth,
        so a burst of environments is not recycled all at once)."""
        lifetime = self.timing.pick("env_max_lifetime", f"env-{env.index}@{env.born}")
        return now - env.born >= lifetime

    def _retire_envs(self, fn: FunctionRecord) -> None:
        """A completed change: new invocations get new environments, old ones retire."""
        fn.revision += 1
        self.envs = [replace(e, stale=True) if e.function == fn.name else e
                     for e in self.envs]

    def _spill(self, now: float, sessions: dict[str, int], effects: Effects) -> None:
        for key, users in self.users().items():
            mine = [e for e in self.enis if e.key == key and e.legacy_env is None]
            if not mine or any(e.status != IN_USE for e in mine):
                continue
            if all(sessions.get(e.id, 0) >= self.limits.connection_limit for e in mine):
                fn = self.functions[users[0]]
                made: list[Eni] = []
                spill = max(e.spill for e in mine) + 1
                if self._new_eni(fn, key, now, made, spill=spill) is None:
                    effects.changed = True
                    effects.events.append(f"{made[0].id} added at the connection limit")

    # -- environments --------------------------------------------------------------------------
    def legacy_eni(self, fn: FunctionRecord, subnet_id: str, env_index: int,
                   now: float) -> Eni:
        """Legacy mode: the new environment's own ENI, created at its cold start."""
        assert fn.vpc is not None and fn.vpc_id is not None
        made: list[Eni] = []
        code = self._new_eni(fn, EniKey(fn.vpc_id, subnet_id, fn.vpc.groups), now, made,
                             legacy_env=env_index)
        if code is not None:
            raise ApiError(INVOKE_ERRORS[code], REASONS[code].format(ids=""), 502)
        return made[0]

    def forget_envs(self, indices: set[int]) -> None:
        self.envs = [e for e in self.envs if e.index not in indices]
