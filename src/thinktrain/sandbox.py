"""Run model-written Python where it can do no harm: the trainer's side of the sandbox (the isolation itself is
sandbox_zygote.py, a separate interpreter this module starts).

Why a warm worker: a fresh `python` per call costs ~10 ms of CPU (~100-150 calls/s on 2 cores); the zygote is
started once, already isolated, with nothing secret in its memory or environment (a new interpreter: `-I -S`,
an empty environment, not a fork of the trainer), and clones one process per program. Why a socket and futures:
TRL's tool loop awaits async tools on its own event-loop thread and thinktrain's generator calls from the main
thread; a reader thread resolving concurrent futures serves both, and many programs run at once.

`python_sandbox` (recipe key) picks the mechanism: `namespaces` (default; refused in one line where the kernel
forbids unprivileged user namespaces, never silently weakened) or `rlimits` (what any Linux gives; weaker,
docs/tools.md says how). Leaf module: imports nothing of thinktrain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

MECHANISMS = ("namespaces", "rlimits")
OUTPUT_CHARS = 2000  # stdout the model reads, at most (then "... (output truncated ...)")
MAX_CODE_CHARS = 20_000
LIMITS = {
    "timeout": 10.0,  # wall-clock seconds per program (the tool: tools.sandbox_seconds); CPU seconds: this + 1
    "memory_bytes": 512 << 20,  # address space (RLIMIT_AS): a 16 GB allocation is a MemoryError
    "file_bytes": 16 << 20,  # largest file, and the scratch tmpfs
    "processes": 32,  # RLIMIT_NPROC; seccomp already refuses new processes, threads stay bounded
    "read_bytes": 64 << 10,  # stdout read before the program is killed as too talkative
    "output_chars": OUTPUT_CHARS,
}
ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_zygote.py")
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # all a program's environment holds: no token, no HOME


def _request(key, code, timeout) -> bytes:
    """One request, as UTF-8: ASCII escapes would make a 20,000-character program of emoji 240 KB, over what one
    socket message may hold (~200 KB); a program with lone surrogates (not UTF-8) is escaped, which is rare."""
    request = {"id": key, "code": code, "timeout": timeout}
    try:
        return json.dumps(request, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(request).encode()


class SandboxUnavailable(Exception):
    """The machine cannot provide the mechanism asked for (the message says why, in one line)."""


class Sandbox:
    """A warm, isolated worker that runs programs; started on first use, restarted if it dies."""

    def __init__(self, mechanism: str = "namespaces", **limits):
        if mechanism not in MECHANISMS:
            raise ValueError(f"python_sandbox must be one of {', '.join(MECHANISMS)}, got {mechanism!r}")
        self.mechanism, self.limits = mechanism, {**LIMITS, **limits}
        self._lock = threading.Lock()
        self._proc = self._sock = None
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()

    def start(self):
        """Start the worker unless it runs; SandboxUnavailable when it cannot isolate itself here."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                proc = subprocess.Popen(
                    [os.path.realpath(sys.executable), "-I", "-S", "-B", ZYGOTE, self.mechanism,
                     json.dumps(self.limits), str(theirs.fileno())],
                    env=ENV, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), start_new_session=True)
            finally:
                theirs.close()
            ours.settimeout(30)
            try:
                hello = json.loads(ours.recv(1 << 16) or b'{"ready": false, "reason": "it exited at start"}')
            except (OSError, ValueError) as e:
                hello = {"ready": False, "reason": f"no answer ({type(e).__name__})"}
            if not isinstance(hello, dict):
                hello = {"ready": False, "reason": "a malformed greeting"}
            if not hello.get("ready"):
                proc.kill()
                proc.wait()
                ours.close()
                raise SandboxUnavailable(hello.get("reason", "unknown"))
            ours.settimeout(None)
            self._proc, self._sock = proc, ours
            threading.Thread(target=self._read, args=(proc, ours), daemon=True, name="sandbox-reader").start()

    def _read(self, proc, sock):
        """Resolve each reply's future; when the worker goes, or sends what is not a reply (then it is stopped: the
        call it meant cannot be known), every call in flight gets an error string. Never raises."""
        why = "the sandbox stopped; try again"
        while True:
            try:
                message = sock.recv(1 << 20)
            except OSError:
                message = b""
            if not message:
                break
            try:
                reply = json.loads(message)
                key, result = reply["id"], reply["result"]
                if not isinstance(key, int) or not isinstance(result, str):
                    raise TypeError("not an id and a string")
            except (ValueError, KeyError, TypeError) as e:
                why = f"the sandbox sent a malformed reply ({type(e).__name__}); try again"
                break
            future = self._pending.pop(key, None)
            if future is not None and not future.done():
                future.set_result(result)
        with self._lock:
            for key in list(self._pending):
                future = self._pending.pop(key)
                if not future.done():
                    future.set_result(f"error: {why}")
            if proc is not None and self._proc is proc:
                proc.kill()
                proc.wait()
                self._proc = None
            if self._sock is sock:
                self._sock = None
        sock.close()  # (the next call starts a new worker, with a new socket)

    def submit(self, code, timeout: float | None = None) -> concurrent.futures.Future:
        """A future of the program's result string (never an exception)."""
        future = concurrent.futures.Future()
        if not isinstance(code, str):
            future.set_result("error: code must be a string")
            return future
        if len(code) > MAX_CODE_CHARS:
            future.set_result(f"error: the program is longer than {MAX_CODE_CHARS} characters")
            return future
        key = None
        try:
            self.start()
            with self._lock:
                key, sock = next(self._ids), self._sock
                self._pending[key] = future
            # outside the lock, never blocking for long: a worker that takes no programs (its queue holds 10)
            # must not stall every other caller, the reader thread's clean-up included
            self._send(sock, _request(key, code, timeout), timeout or self.limits["timeout"])
        except (SandboxUnavailable, OSError, ValueError) as e:
            self._pending.pop(key, None)
            if not future.done():
                future.set_result(f"error: the sandbox is unavailable ({e})")
        return future

    @staticmethod
    def _send(sock, data: bytes, seconds: float):
        """Send one message (SOCK_SEQPACKET: whole or not at all), waiting at most `seconds` for room."""
        end = time.monotonic() + seconds
        while True:
            if sock is None or sock.fileno() < 0:
                raise OSError("it was closed")
            try:
                sock.send(data, socket.MSG_DONTWAIT)
                return
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise OSError(f"busy: it took no program for {seconds:g} s") from None
                select.select([], [sock], [], max(0.0, end - time.monotonic()))

    def _backstop(self, timeout):  # the worker's own deadline fires first; this only guards against a stuck worker
        return 2 * (timeout or self.limits["timeout"]) + 5

    def _submit_at_once(self, code, timeout: float | None) -> concurrent.futures.Future | None:
        """submit() where it cannot block, so the event loop may call it: the worker runs and its socket has room
        (the usual case). None otherwise (starting the worker, a full queue, a dead worker, a refused program):
        then submit() runs on a thread."""
        sock = self._sock
        if sock is None or not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
            return None
        future = concurrent.futures.Future()
        if not self._lock.acquire(blocking=False):  # another thread starts or stops the worker: never wait here
            return None
        try:
            if self._sock is not sock:
                return None
            key = next(self._ids)
            self._pending[key] = future
        finally:
            self._lock.release()
        try:
            sock.send(_request(key, code, timeout), socket.MSG_DONTWAIT)
        except (OSError, ValueError):  # BlockingIOError (full) is an OSError; the slow path waits, or restarts
            self._pending.pop(key, None)
            return None
        return future

    async def run(self, code, timeout: float | None = None) -> str:
        try:
            return await asyncio.wait_for(self._result(code, timeout), self._backstop(timeout))
        except asyncio.TimeoutError:
            return "error: the sandbox did not answer"

    async def _result(self, code, timeout) -> str:
        future = self._submit_at_once(code, timeout)
        if future is None:  # on a thread: it may start the worker, or wait for room; the loop runs other tools
            future = await asyncio.get_running_loop().run_in_executor(None, self.submit, code, timeout)
        return await asyncio.wrap_future(future)

    def run_sync(self, code, timeout: float | None = None) -> str:
        try:
            return self.submit(code, timeout).result(self._backstop(timeout))
        except concurrent.futures.TimeoutError:
            return "error: the sandbox did not answer"

    def close(self):
        """Stop the worker: closing the socket ends it, and with it (PID 1 of its namespace) all it started."""
        with self._lock:
            proc, sock, self._proc, self._sock = self._proc, self._sock, None, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader thread; close() alone would not reach the peer
            except OSError:
                pass
            sock.close()
        if proc is not None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


    def check(self) -> str | None:
        """Start the worker and run a test program: None, or why this machine cannot (one line)."""
        try:
            self.start()
        except SandboxUnavailable as e:
            return str(e)
        out = self.run_sync("print(6 * 7)", timeout=5)
        if out == "42\n":
            return None
        self.close()  # refused: no worker is left behind for a run that stops here
        return f"a test program returned {out!r}"


def check_mechanism(mechanism: str) -> str | None:
    """Why `mechanism` cannot run here (one line), or None when a test program runs under it."""
    box = Sandbox(mechanism)
    try:
        return box.check()
    finally:
        box.close()
