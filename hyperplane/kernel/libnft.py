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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

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
    """(return code, output, errors) of nft command(s) ``text`` inside namespace ``ns``."""
    lib = _load()
    if lib is None:
        raise RuntimeError("libnftables is not available")
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, ns)
        finally:
            os.close(target)
        try:
            return _run_here(lib, text, json_output)
        finally:
            _setns(home, "home")
    finally:
        os.close(home)


def _run_here(lib: ctypes.CDLL, text: str, json_output: bool) -> tuple[int, str, str]:
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise RuntimeError("nft_ctx_new failed")
    try:
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if json_output:
            lib.nft_ctx_output_set_flags(ctx, OUTPUT_JSON)
        code = lib.nft_run_cmd_from_buffer(ctx, text.encode())
        out = lib.nft_ctx_get_output_buffer(ctx) or b""
        err = lib.nft_ctx_get_error_buffer(ctx) or b""
        return (0 if code == 0 else 1), out.decode(errors="replace"), \
            err.decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
