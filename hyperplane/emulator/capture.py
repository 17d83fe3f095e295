"""``hyperplane capture``: tcpdump on the right link, chosen by name (side effects: reads the
state database, may start an environment, execs tcpdump inside a namespace).

The user names what to watch; ``target`` finds the namespace and the link:

    --eni ID       the ENI's VPC side: its link ``hpn<N>`` on the subnet's bridge, in the
                   VPC router's namespace ``hp-r<V>`` (``fabric.desired.eni_objects``): the
                   VPC's view, where the ENI's address is the source of what leaves it
    --host NAME    the host's ``eth0`` inside its namespace (what the host sends and gets)
    --env ENV      an execution environment's ``eth0`` (``env-N`` or ``N``): its 169.254.x
                   address, before Hyperplane's NAT
    --function F   an environment of F, the one used last; when F has none, one is started
                   (``requests.acquire_env``) and given back at once, so that the next
                   invocation finds it warm

``exec`` then becomes ``tcpdump -i LINK -U -n -Z root [-w FILE] [-c N] [FILTER...]`` inside
the namespace (``procs.exec_in``): signals reach tcpdump, its exit code is the command's.
``-Z root`` keeps the file the user's (Debian's tcpdump otherwise writes it as the
``tcpdump`` user).  A duration runs it under coreutils' ``timeout --foreground
--preserve-status -s INT -k 5 S``: after S seconds tcpdump gets SIGINT as from Ctrl-C
(the file complete, its counts printed, exit 0), and SIGKILL 5 s later if it is still there.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperplane.emulator import requests
from hyperplane.emulator.running import Running
from hyperplane.errors import UsageError
from hyperplane.fabric.desired import host_netns, router_netns
from hyperplane.kernel import procs
from hyperplane.model.envs import Env

KILL_AFTER = 5  # seconds after the duration's SIGINT


@dataclass(frozen=True)
class Target:
    netns: str
    link: str
    what: str  # said on stderr before tcpdump starts


def _eni(running: Running, eni_id: str) -> Target:
    eni = next((e for e in running.enis if e.id == eni_id), None)
    if eni is None:
        raise UsageError(f"no ENI {eni_id!r} is up (see `hyperplane eni list`)")
    return Target(router_netns(running.topology, eni.key.vpc_id), eni.vpc_link,
                  f"ENI {eni.id} ({eni.ip}, {eni.key.subnet_id}), VPC side")


def _host(running: Running, name: str) -> Target:
    try:
        host = running.topology.host(name)
    except KeyError:
        raise UsageError(f"no host named {name!r} in {running.data['source']}") from None
    return Target(host_netns(running.topology, name), "eth0",
                  f"host {host.name} ({host.ip}, {host.subnet}), eth0")


def _env_target(env: Env) -> Target:
    return Target(env.netns, "eth0", f"{env.id} of {env.function} ({env.ip}), eth0")


def _env(running: Running, ident: str) -> Target:
    index = ident.removeprefix("env-")
    env = next((e for e in running.envs if index.isdigit() and e.index == int(index)), None)
    if env is None:
        raise UsageError(f"no execution environment {ident!r} is up (`hyperplane status` "
                         "counts them; `invoke --json` names the one it used)")
    return _env_target(env)


def function_name(running: Running, name: str) -> str:
    """The function's name; a template's logical id stands for its function."""
    names = {f.name for f in running.functions}
    if name in names:
        return name
    aliases = (running.data.get("stack") or {}).get("functions") or {}
    if aliases.get(name) in names:
        return aliases[name]
    raise UsageError(f"no function named {name!r} (see `hyperplane function list`)")


def _function(running: Running, name: str) -> Target:
    name = function_name(running, name)
    envs = sorted((e for e in running.envs if e.function == name and not e.stale),
                  key=lambda e: (e.last_used, e.index), reverse=True)
    if envs:
        return _env_target(envs[0])
    env, lease, _cold = requests.acquire_env(name)
    requests.release(lease)  # idle at once: the next invocation takes it, warm
    return _env_target(env)


def target(running: Running, eni: str | None = None, host: str | None = None,
           function: str | None = None, env: str | None = None) -> Target:
    """Where to capture: exactly one of ``eni``, ``host``, ``function``, ``env``."""
    given = [(k, v) for k, v in (("eni", eni), ("host", host), ("function", function),
                                 ("env", env)) if v]
    if len(given) != 1:
        raise UsageError("name exactly one of --eni, --host, --function, --env")
    kind, value = given[0]
    return {"eni": _eni, "host": _host, "function": _function, "env": _env}[kind](
        running, value)


def tcpdump_argv(link: str, write: str | None = None, count: int | None = None,
                 duration: float | None = None, words: tuple[str, ...] = ()) -> list[str]:
    """The command ``capture`` becomes (see the module's docstring)."""
    argv = ["tcpdump", "-i", link, "-U", "-n", "-Z", "root"]
    if write:
        argv += ["-w", write]
    if count:
        argv += ["-c", str(count)]
    argv += list(words)
    if duration:
        argv = ["timeout", "--foreground", "--preserve-status", "-s", "INT",
                "-k", str(KILL_AFTER), f"{duration:g}", *argv]
    return argv


def run(where: Target, argv: list[str]) -> int:
    """Become ``argv`` in the target's namespace; returns only if it cannot start (127)."""
    return procs.exec_in(where.netns, argv)
