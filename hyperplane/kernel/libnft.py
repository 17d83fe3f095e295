"""nftables commands run in-process through libnftables, inside a named namespace
(side effects).

Running the ``nft`` binary costs about 33 ms a command on our machines (mostly its own
start-up); a topology of 1,000 hosts applies and reads every host's firewall at ``up`` and
again when the members of a group change: a minute of ``nft`` runs.  ``run(ns, text,
json)`` does the same work through ``libnftables.so.1`` (ctypes; 0.1 ms for a read): the
calling thread enters the namespace (setns), a fresh context is made there (its netlink
socket is the namespace's), the command runs with its output and errors buffered, then
the thread returns to its own namespace.  ``available()`` says whether the library loads;
``kernel.nftables`` falls back to the binary when it does not.

Within ``batch()`` (every host's firewall, read and applied again): freeing a context
whose command changed a ruleset waits for the kernel to finish the clean-up of the
transaction (an RCU grace period: 6 to 15 ms here, most of an apply's 8 to 17 ms), so
the thread keeps one context per namespace and frees them ``BATCH`` at a time: the first
free waits for the clean-up of them all, the others find nothing left to wait for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
OUTPUT_JSON = 1 << 4
_LIBC = ctypes.CDLL(None, use_errno=True)
_LIB: ctypes.CDLL | None = None
_TRIED = False


def _load() -> ctypes.CDLL | None:
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    _LIB = lib
    return lib


def available() -> bool:
    return _load() is not None


def _setns(fd: int, where: str) -> None:
    if _LIBC.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns {where}: {os.strerror(code)}")


def run(ns: str, text: str, json_output: bool = False) -> tuple[int, str, str]:
    """(return code, output, errors) of nft command(s) ``text`` inside namespace ``ns``;
    each command has taken effect when this returns."""
    lib = _require()
    held: dict[str, int] | None = getattr(_batches, "held", None)
    if held is None:
        ctx = _new_context(lib, ns)
        try:
            return _run_context(lib, ctx, ns, text, json_output)
        finally:
            lib.nft_ctx_free(ctx)
    if ns not in held:
        if len(held) >= BATCH:
            _free(lib, held)
        held[ns] = _new_context(lib, ns)
    return _run_context(lib, held[ns], ns, text, json_output)


BATCH = 64  # contexts a thread keeps in ``batch()`` before it frees them together
_batches = threading.local()


@contextmanager
def batch() -> Iterator[None]:
    """The calling thread's commands in the block keep their context (one per namespace)
    until ``BATCH`` are held or the block ends (see the module's docstring)."""
    if getattr(_batches, "held", None) is not None:  # already in one: it frees them
        yield
        return
    _batches.held = {}
    try:
        yield
    finally:
        held, _batches.held = _batches.held, None
        lib = _load()
        if lib is not None:
            _free(lib, held)
        _trim()


def _trim() -> None:
    """Give the heap the freed contexts leave back to the system (a context of a host's
    firewall grows the heap by about 340 KB; a batch of them held 22 MB in the
    controller afterwards): glibc's ``malloc_trim``, where there is one."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _require() -> ctypes.CDLL:
    lib = _load()
    if lib is None:
        raise RuntimeError("libnftables is not available")
    return lib


def _free(lib: ctypes.CDLL, held: dict[str, int]) -> None:
    while held:
        lib.nft_ctx_free(held.popitem()[1])


def _new_context(lib: ctypes.CDLL, ns: str) -> int:
    """A context made inside ``ns`` (its netlink socket is that namespace's), its output
    and errors buffered."""
    with _inside(ns):
        ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise RuntimeError("nft_ctx_new failed")
    lib.nft_ctx_buffer_output(ctx)
    lib.nft_ctx_buffer_error(ctx)
    return ctx


def _run_context(lib: ctypes.CDLL, ctx: int, ns: str, text: str,
                 json_output: bool) -> tuple[int, str, str]:
    """Run ``text`` with ``ctx``, the calling thread inside ``ns`` meanwhile (the library
    may look interfaces up there); reading a buffer rewinds it for the next command."""
    lib.nft_ctx_output_set_flags(ctx, OUTPUT_JSON if json_output else 0)
    with _inside(ns):
        code = lib.nft_run_cmd_from_buffer(ctx, text.encode())
    out = lib.nft_ctx_get_output_buffer(ctx) or b""
    err = lib.nft_ctx_get_error_buffer(ctx) or b""
    return (0 if code == 0 else 1), out.decode(errors="replace"), err.decode(errors="replace")


@contextmanager
def _inside(ns: str) -> Iterator[None]:
    """The calling thread inside namespace ``ns`` for the block, then back in its own."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, ns)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, "home")
    finally:
        os.close(home)
