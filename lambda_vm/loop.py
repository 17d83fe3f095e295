"""The agent's event loop: one thread, ``selectors`` (epoll), timers and child exits.

The model.  An environment's agent waits on a handful of file descriptors (the Runtime
API's listening socket and its connections, the control socket and its connections,
one pidfd per child process) and a few deadlines (init, the running invocation, a
shutdown).  ``Loop`` multiplexes them on the calling thread with no helper thread, no
asyncio and no per-environment allocation beyond a selector: a thousand idle agents
cost a thousand blocked ``epoll_wait`` calls and nothing else.

    reader(obj, callback)     callback() whenever ``obj`` is readable
    watch(pid, callback)      callback() once process ``pid`` has exited (a pidfd)
    call_at(when, callback)   a ``Timer`` (``cancel()``-able), on ``time.monotonic``
    run_until(predicate, t)   turn the loop until ``predicate()`` or ``t`` seconds pass

A signal handler that must wake the loop raises ``Interrupted`` when ``selecting`` is
set (``select`` is otherwise restarted after a signal): no wake-up descriptor, no pipe.

``Conn`` is one non-blocking stream socket with a bounded outgoing buffer: ``send``
writes what the kernel takes now and the rest when the socket is writable again, so a
slow peer never blocks the loop.  ``pending`` is what waits for the peer; ``on_drain``
(called once) says it has all gone, or that the connection closed: a producer that
paused when ``pending`` grew (a relayed response stream) resumes then.

Side effects: sockets, pidfds and signals' wake-up fd of the calling process.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import socket
import time
from collections.abc import Callable

Callback = Callable[[], None]
MAX_PENDING = 32 << 20  # bytes a connection may have queued for its peer (bounded)


class Interrupted(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a signal handler while the loop waits in ``select``."""


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callback) -> None:
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, Timer]] = []
        self.order = itertools.count()
        self.pidfds: dict[int, int] = {}  # pid -> pidfd
        self.selecting = False

    # -- registration ---------------------------------------------------------------------
    def set(self, obj: object, on_read: Callback | None, on_write: Callback | None) -> None:
        """Call ``on_read`` when ``obj`` is readable, ``on_write`` when writable (None:
        not); both None forgets ``obj``."""
        key = self._key(obj)
        events = (selectors.EVENT_READ if on_read else 0) | \
            (selectors.EVENT_WRITE if on_write else 0)
        if key is None:
            if events:
                self.selector.register(obj, events, (on_read, on_write))
        elif events:
            self.selector.modify(obj, events, (on_read, on_write))
        else:
            self.selector.unregister(obj)

    def reader(self, obj: object, callback: Callback) -> None:
        key = self._key(obj)
        self.set(obj, callback, key.data[1] if key else None)

    def writer(self, obj: object, callback: Callback | None) -> None:
        """Also call ``callback`` when ``obj`` is writable (None: no longer)."""
        key = self._key(obj)
        self.set(obj, key.data[0] if key else None, callback)

    def forget(self, obj: object) -> None:
        if self._key(obj) is not None:
            self.selector.unregister(obj)

    def _key(self, obj: object) -> selectors.SelectorKey | None:
        try:
            return self.selector.get_key(obj)
        except (KeyError, ValueError):
            return None

    def watch(self, pid: int, callback: Callback) -> None:
        """``callback()`` once ``pid`` (a child) has exited."""
        fd = os.pidfd_open(pid)
        self.pidfds[pid] = fd

        def exited() -> None:
            self.unwatch(pid)
            callback()
        self.reader(fd, exited)

    def unwatch(self, pid: int) -> None:
        fd = self.pidfds.pop(pid, None)
        if fd is not None:
            self.forget(fd)
            os.close(fd)

    def call_at(self, when: float, callback: Callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self.timers, (when, next(self.order), timer))
        return timer

    def call_later(self, delay: float, callback: Callback) -> Timer:
        return self.call_at(time.monotonic() + delay, callback)

    # -- running --------------------------------------------------------------------------
    def run_once(self, timeout: float | None) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][2].cancelled:
            heapq.heappop(self.timers)
        if self.timers:
            due = max(0.0, self.timers[0][0] - now)
            timeout = due if timeout is None else min(timeout, due)
        self.selecting = True  # a signal handler may raise out of select (``Interrupted``)
        try:
            ready = self.selector.select(timeout)
        finally:
            self.selecting = False
        for key, events in ready:
            on_read, on_write = key.data
            if events & selectors.EVENT_WRITE and on_write:
                on_write()
            if events & selectors.EVENT_READ and on_read and self._key(key.fileobj):
                on_read()
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _when, _n, timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()

    def run_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Turn until ``predicate()``; False if ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not predicate():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self.run_once(left)
        return True


class Conn:
    """A non-blocking stream socket on the loop, with a bounded outgoing buffer."""

    def __init__(self, loop: Loop, sock: socket.socket, on_data: Callable[[bytes], None],
                 on_close: Callback | None = None) -> None:
        self.loop, self.sock = loop, sock
        self.on_data, self.on_close = on_data, on_close
        self.out = bytearray()
        self.on_drain: Callback | None = None
        self.closed = False
        self.close_when_sent = False
        sock.setblocking(False)
        loop.reader(sock, self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        self.on_data(data)

    @property
    def pending(self) -> int:
        """Bytes queued for the peer, not yet taken by the kernel."""
        return len(self.out)

    def _drained(self) -> None:
        callback, self.on_drain = self.on_drain, None
        if callback is not None:
            callback()

    def pause(self) -> None:
        """Read nothing more until ``resume`` (the peer waits in the kernel's buffer)."""
        if not self.closed:
            self.loop.set(self.sock, None, self._writable if self.out else None)

    def resume(self) -> None:
        if not self.closed:
            self.loop.set(self.sock, self._readable, self._writable if self.out else None)

    def send(self, data: bytes) -> None:
        if self.closed or not data:
            return
        if not self.out:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return
            data = data[sent:]
            if not data:
                if self.close_when_sent:
                    self.close()
                return
        if len(self.out) + len(data) > MAX_PENDING:  # a peer that reads nothing
            self.close()
            return
        self.out += data
        self.loop.writer(self.sock, self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.out[:sent]
        if not self.out:
            self.loop.writer(self.sock, None)
            if self.close_when_sent:
                self.close()
            else:
                self._drained()

    def finish(self) -> None:
        """Close once everything queued has been sent."""
        if self.out:
            self.close_when_sent = True
        else:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.forget(self.sock)
        self.sock.close()
        self.out.clear()
        self._drained()
        if self.on_close is not None:
            self.on_close()
