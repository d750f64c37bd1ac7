"""The sandbox's warm worker: run as `python -I -S sandbox_zygote.py MECHANISM LIMITS_JSON` by thinktrain.sandbox,
never imported by the trainer (standard library only, so it can start with no site-packages and no project on
sys.path). It isolates itself once, then clones one process per program (a copy of a small warm interpreter: ~1 ms,
a fresh `python` costs ~10x that), which confines itself further before running the code; the zygote's one loop
watches every program's output, exit and deadline (poll) and replies.

Layers, each a kernel mechanism rather than an inspection of the code (docs/tools.md has the threat model):
  namespaces  once: user + network + mount + PID + IPC + UTS namespaces; a new root holding only the system's
              libraries and Python's standard library, read-only, no /etc, /home, /tmp, project or caches;
              per program: a nested user + mount + PID + IPC namespace made by the clone that makes the program's
              process, its PID 1 (kill it and the kernel kills anything else in it; mounts inherited across a user
              namespace are locked, so it cannot unmount the new root to see the real one), a fresh /proc showing
              only its own processes, a tmpfs scratch as cwd, no SysV/POSIX IPC object shared with the next program.
  rlimits     per program: its own session, a scratch dir removed afterwards, and (running as root) uid nobody.
  both        resource limits (CPU s, address space, processes, file size, open files), a seccomp filter (no new
              processes, no mount (old or new API)/ptrace/namespaces/bpf/keyring/io_uring/SysV or POSIX IPC), a
              wall-clock deadline, bounded output, an empty environment.
Protocol: one SOCK_SEQPACKET socket (its fd is argv[3]); a request is JSON {"id", "code", "timeout"}, a reply {"id", "result"}.
The zygote exits when the trainer's end closes; as PID 1 of its namespace, every process in it dies with it.
"""

import ctypes
import errno
import gc
import json
import os
import platform
import resource
import select
import shutil
import signal
import socket
import struct
import sys
import time
import traceback

LIBC = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_THREAD = 0x10000000, 0x20000000, 0x40000000, 0x00010000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_NOATIME, MS_NODIRATIME, MS_REC, MS_PRIVATE, MS_RELATIME = 1024, 2048, 16384, 1 << 18, 1 << 21
MNT_DETACH, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 2, 38, 4, 22, 2
SCRATCH, MAX_LIVE = "/scratch", 64  # at most this many programs at once (the zygote waits for one to end)
# rlimits' scratch dirs: where tempfile.gettempdir() looks when no TMPDIR is set (the zygote's environment has none)
TMP = next((d for d in ("/tmp", "/var/tmp", "/usr/tmp") if os.access(d, os.W_OK | os.X_OK)), "/tmp")
# Imported once here, so a program's `import math` costs nothing. Under namespaces not random, statistics (imports
# random) or threading: their after-fork hooks (reseeding, thread state) would run in every program's process,
# ~0.4 ms whether it uses them or not; a program that imports them pays instead. Under rlimits as root a program
# runs as uid nobody, who may not read Python's library (under /root, say): what it may import is loaded here.
WARM = ("math", "fractions", "decimal", "itertools", "functools", "collections", "re", "json", "datetime", "string",
        "heapq", "bisect", "operator")
WARM_RLIMITS = WARM + ("random", "statistics", "threading")


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def unshare(flags):
    _check(LIBC.unshare(flags), "unshare")


def _write(path, text):
    fd = os.open(path, os.O_WRONLY)  # not open(): no io objects to build in each program's process
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def map_to_root(uid, gid):
    """Be uid/gid 0 inside the user namespace just made, mapped to (uid, gid) outside: the one mapping an
    unprivileged process may write. setgroups must be denied first (the kernel requires it)."""
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")


# --------------------------------------------------------------------------- seccomp

# (fork, vfork, clone, clone3), then the calls nothing computing needs, which are most of the kernel's attack surface:
# ptrace, mount/umount2/pivot_root/unshare/setns, bpf, perf_event_open, userfaultfd, io_uring_setup, keyrings,
# process_vm_readv/writev, kexec/modules, acct, reboot; the new mount API (open_tree, move_mount, fsopen, fsconfig,
# fsmount, fspick, mount_setattr: mounts without mount(2)); SysV shared memory, semaphores and message queues and
# POSIX message queues (state a program could leave for the next one, or share with the host under rlimits)
_SYSCALLS = {
    "x86_64": (0xC000003E, (57, 58, 56, 435), (101, 165, 166, 155, 272, 308, 321, 298, 323, 425, 250, 248, 249, 310,
                                               311, 246, 175, 313, 320, 163, 169,
                                               428, 429, 430, 431, 432, 433, 442,
                                               29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71,
                                               240, 241, 242, 243, 244, 245)),
    "aarch64": (0xC00000B7, (None, None, 220, 435), (117, 40, 39, 41, 97, 268, 280, 241, 282, 425, 219, 217, 218,
                                                     270, 271, 104, 105, 273, 294, 89, 142,
                                                     428, 429, 430, 431, 432, 433, 442,
                                                     194, 196, 195, 197, 190, 193, 191, 192, 186, 189, 188, 187,
                                                     180, 181, 182, 183, 184, 185)),
}
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (CLONE_NEWTIME only exists for clone3 and unshare)
CLONE_NEW_ANY = 0x00020000 | 0x02000000 | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET


def seccomp_filter():
    """A BPF program: fork/vfork fail, clone3 fails with ENOSYS (glibc then uses clone, whose flags a filter can
    read: clone3's are behind a pointer), clone fails unless it makes a thread (CLONE_THREAD; threads stay
    possible, bounded by the address space) with no CLONE_NEW* flag, the listed calls fail with EPERM, a foreign
    architecture or x32 call kills the process."""
    arch, (fork, vfork, clone, clone3), denied = _SYSCALLS[platform.machine()][0], *_SYSCALLS[platform.machine()][1:]
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, kill), (ld, 0, 0, 0)]  # seccomp_data.arch, .nr
    if platform.machine() == "x86_64":
        prog += [(0x35, 0, 1, 0x40000000), (ret, 0, 0, kill)]  # jge x32 ABI -> kill
    for nr in (n for n in (fork, vfork) + denied if n is not None):
        prog += [(jeq, 0, 1, nr), (ret, 0, 0, eperm)]
    prog += [(jeq, 0, 1, clone3), (ret, 0, 0, enosys)]
    prog += [(jeq, 0, 4, clone), (ld, 0, 0, 16),  # args[0] = flags (their low 32 bits: all clone(2) reads)
             (jset, 1, 0, CLONE_NEW_ANY), (jset, 1, 0, CLONE_THREAD), (ret, 0, 0, eperm)]
    prog += [(ret, 0, 0, allow)]
    return b"".join(struct.pack("HBBI", *ins) for ins in prog), len(prog)


def apply_seccomp(program):
    code, n = program
    buf = ctypes.create_string_buffer(code)
    fprog = struct.pack("HxxxxxxQ", n, ctypes.addressof(buf))
    _check(LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_char_p(fprog), 0, 0), "seccomp")


# --------------------------------------------------------------------------- once: the zygote's own isolation


def _bind_readonly(src, root):
    """Bind `src` at the same path under `root`, read-only. Flags the kernel locked on the original (nosuid,
    nodev, noexec, atime) must be repeated in the remount or a user namespace may not remount it."""
    dst = root + src
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    have = os.statvfs(src).f_flag
    keep = sum(ms for st, ms in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                                 (2048, MS_NODIRATIME), (4096, MS_RELATIME)) if have & st)
    mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def isolate_namespaces():
    """Enter fresh namespaces and a new, read-only root holding the system and Python only; return after the fork
    that makes this process PID 1 of its PID namespace (the parent waits, then exits with it)."""
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS)
    map_to_root(uid, gid)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    root = "/tmp"  # any existing directory: the tmpfs mounted on it is the new root, the host's /tmp unseen
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    python = {sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))}
    for top in ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", *sorted(python)):
        if os.path.islink(top) and os.path.dirname(top) == "/":
            os.symlink(os.readlink(top), root + top)  # merged-/usr layouts: /lib -> usr/lib
        elif os.path.isdir(top) and not os.path.exists(root + top):
            _bind_readonly(top, root)
    for d in ("/dev", "/proc", SCRATCH, "/.old"):
        os.makedirs(root + d, exist_ok=True)
    for dev in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + dev):
            _bind_readonly("/dev/" + dev, root)
    os.chdir(root)
    _check(LIBC.syscall(155 if platform.machine() == "x86_64" else 41, b".", b".old"), "pivot_root")
    os.chdir("/")
    pid = os.fork()  # the child is PID 1 of the new PID namespace
    if pid:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    # a /proc of the new PID namespace, mounted while the host's is still in reach (the kernel lets a user
    # namespace mount proc only where a fully visible one exists), then the old root goes
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _check(LIBC.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


# --------------------------------------------------------------------------- per program

PROGRAM_NS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC  # IPC: no SysV/POSIX object outlives it
_SYSCALL = ctypes.PyDLL(None, use_errno=True).syscall  # PyDLL: the GIL stays held across clone, as os.fork holds it
_SYSCALL.restype = ctypes.c_long
SYS_CLONE = {"x86_64": 56, "aarch64": 220}


def clone(flags):
    """fork(2) straight into new namespaces: clone(flags | SIGCHLD) on a copy of this stack, with CPython's own fork
    hooks around it (what os.fork runs). One process per program: it is PID 1 of its PID namespace itself, where an
    unshare would need a second fork to enter it. Returns 0 in the child."""
    ctypes.pythonapi.PyOS_BeforeFork()
    zero = ctypes.c_ulong(0)
    pid = _SYSCALL(ctypes.c_long(SYS_CLONE[platform.machine()]), ctypes.c_ulong(flags | signal.SIGCHLD),
                   zero, zero, zero, zero)
    err = ctypes.get_errno()
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone: {os.strerror(err)}")
    return pid


def confine_call(limits):
    """namespaces, in the program's process, first: root inside its own user namespace (made by clone with its
    mount, PID and IPC ones), a tmpfs scratch and a /proc showing only itself."""
    map_to_root(0, 0)
    mount("tmpfs", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV, f"size={limits['file_bytes']},nr_inodes=256,mode=777")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)  # only this program's processes
    return SCRATCH


def real_root() -> bool:
    """uid 0 of the machine (not of a user namespace, where uid nobody would not exist)."""
    with open("/proc/self/uid_map") as f:
        return os.geteuid() == 0 and f.read().split() == ["0", "0", "4294967295"]


def close_inherited():
    """Close every fd above 2 (the worker's socket to the trainer included), however high: close_range(2) (Linux
    5.9), else each fd /proc lists; a fixed bound such as 65536 would miss those above it."""
    if LIBC.syscall(ctypes.c_long(436), ctypes.c_uint(3), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(0)) == 0:
        return
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own fd, closed already


def run_program(code, mechanism, scratch, limits, out_w, err_w, seccomp):
    """The program's own process: confine, then run `code`; never returns."""
    try:
        if mechanism == "namespaces":
            scratch = confine_call(limits)
        os.setsid()
        os.chdir(scratch)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        close_inherited()
        cpu = max(1, int(limits["timeout"]) + 1)
        for which, value in ((resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, limits["memory_bytes"]),
                             (resource.RLIMIT_FSIZE, limits["file_bytes"]), (resource.RLIMIT_NOFILE, 64),
                             (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, limits["processes"])):
            if which != resource.RLIMIT_NPROC or mechanism == "namespaces" or real_root():
                resource.setrlimit(which, (value, value))  # hard limit too: it cannot be raised again
        if mechanism == "rlimits" and real_root():  # never run model code as the machine's root
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        apply_seccomp(seccomp)
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    except BaseException as e:
        try:
            fd = err_w if err_w in {int(n) for n in os.listdir("/proc/self/fd")} else 2  # closed after dup2
            os.write(fd, f"sandbox set-up failed: {e}\n".encode())
        finally:
            os._exit(70)
    status = 0
    try:
        exec(compile(code, "<code>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            os.write(2, b"error\n")
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status & 0xFF)


class Program:
    """One program in flight: its process, pipes, deadline and what it has said so far."""

    def __init__(self, key, pid, out_r, err_r, timeout, scratch):
        self.key, self.pid, self.out_r, self.err_r, self.scratch = key, pid, out_r, err_r, scratch
        self.timeout, self.deadline = timeout, time.monotonic() + timeout
        self.out, self.err, self.status, self.why = bytearray(), bytearray(), None, None
        try:  # its exit is watched with a pidfd: a program that closes its pipes and sleeps is still cut in time
            self.pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):  # a kernel before 5.3: waitpid at each turn of the loop instead
            self.pidfd = None

    def fds(self):
        return [fd for fd in (self.out_r, self.err_r, self.pidfd) if fd is not None]


def make_scratch():
    """A new 0700 directory under TMP (no other user looks in or plants files), as tempfile.mkdtemp makes one."""
    while True:
        path = os.path.join(TMP, "thinktrain-sandbox-" + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue


def start(request, mechanism, limits, seccomp):
    """One program, one process (cloned into its namespaces, or forked under rlimits)."""
    limits = {**limits, "timeout": float(request.get("timeout") or limits["timeout"])}
    scratch = None
    if mechanism != "namespaces":
        scratch = make_scratch()
        if real_root():
            os.chown(scratch, 65534, 65534)  # the program runs as uid nobody (run_program): its own dir, still 0700
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    try:
        pid = clone(PROGRAM_NS) if mechanism == "namespaces" else os.fork()
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if pid == 0:
        run_program(request["code"], mechanism, scratch, limits, out_w, err_w, seccomp)
    os.close(out_w)
    os.close(err_w)
    return Program(request["id"], pid, out_r, err_r, limits["timeout"], scratch)


def advance(program, fd, limits, poller, owner):
    """What `fd` (one of the program's) has for us: output, the end of a pipe, or its exit (waitpid); sets
    program.why when it must be cut. A pipe at its end and a pidfd once read are no longer watched."""
    if fd == program.pidfd:
        done, status = os.waitpid(program.pid, os.WNOHANG)
        if done:
            program.status = status
            unwatch(fd, poller, owner)  # an exited process's pidfd stays readable
        return
    chunk = os.read(fd, 65536)
    if not chunk:
        unwatch(fd, poller, owner)
        os.close(fd)
        if fd == program.out_r:
            program.out_r = None
        else:
            program.err_r = None
    elif fd == program.out_r:
        program.out += chunk
        if len(program.out) > limits["read_bytes"]:
            program.why = "truncated"
    else:
        program.err = (program.err + chunk)[-4096:]


def unwatch(fd, poller, owner):
    if owner.pop(fd, None) is not None:
        poller.unregister(fd)


def kill(pid):
    """SIGKILL the program: PID 1 of its namespace (the kernel kills the rest) and its session's process group
    (rlimits, where it is not: seccomp leaves it no processes to make, this is the second belt)."""
    for send in (os.kill, os.killpg):
        try:
            send(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # gone already; or setsid not reached yet, so there is no group of its own


def format_result(out, err, status, why, limits):
    cap = limits["output_chars"]
    text = out.decode("utf-8", "replace")
    if why and why.startswith("timed out"):
        return f"error: {why}"
    if os.WIFSIGNALED(status) and why is None:
        sig = os.WTERMSIG(status)
        name = {signal.SIGXCPU: "CPU time limit exceeded", signal.SIGXFSZ: "file size limit exceeded",
                signal.SIGSYS: "a forbidden system call"}.get(sig, f"killed by {signal.Signals(sig).name}")
        return f"error: {name}"
    code = os.waitstatus_to_exitcode(status) if why is None else 0
    if code != 0:
        lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        return f"error: {lines[-1].strip()[:200]}" if lines else f"error: exit status {code}"
    if len(text) > cap or why == "truncated":
        return text[:cap] + f"\n... (output truncated to {cap} characters)"
    return text


# --------------------------------------------------------------------------- the loop


def main():
    mechanism, limits = sys.argv[1], json.loads(sys.argv[2])
    sock = socket.socket(fileno=int(sys.argv[3]))
    try:
        if mechanism == "namespaces":
            isolate_namespaces()
        else:
            os.chdir(TMP)
        seccomp = seccomp_filter()
        LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem or environ of this process for programs
        for name in WARM if mechanism == "namespaces" else WARM_RLIMITS:
            __import__(name)  # warm: a program's `import math` costs nothing (and works as uid nobody)
        exec(compile("x = [n * 2 for n in range(3)]", "<warm>", "exec"), {})  # the compiler's first use, once
        gc.freeze()  # a child's collections skip the zygote's objects: fewer copy-on-write faults per fork
    except Exception as e:
        sock.send(json.dumps({"ready": False, "reason": f"{type(e).__name__}: {e}"}).encode())
        return
    sock.send(json.dumps({"ready": True}).encode())
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    serve(sock, mechanism, limits, seccomp)


def serve(sock, mechanism, limits, seccomp):
    """The loop: take programs (at most MAX_LIVE at once), read their output, watch exits and deadlines, reply.
    A program cut (deadline, too much output) is killed and answered at once; its process is reaped when it is gone
    (a kill takes effect at once, but the loop never waits on one)."""
    poller, owner = select.poll(), {}  # fd -> its Program
    running, dying = set(), set()
    accepting = True
    poller.register(sock, select.POLLIN)
    while True:
        if accepting != (len(running) + len(dying) < MAX_LIVE):
            accepting = not accepting
            poller.modify(sock, select.POLLIN if accepting else 0)
        now = time.monotonic()
        wait = min((p.deadline for p in running), default=None)
        if any(p.pidfd is None for p in running | dying):
            wait = min(wait or now + 0.05, now + 0.05)
        for fd, _ in poller.poll(None if wait is None else max(0.0, wait - now) * 1000):
            if fd == sock.fileno():
                try:
                    message = sock.recv(1 << 20)
                except InterruptedError:
                    continue
                if not message:
                    return  # the trainer closed its end (or died); as PID 1, all we started dies with us
                request = json.loads(message)
                try:
                    program = start(request, mechanism, limits, seccomp)
                except Exception as e:
                    sock.send(json.dumps({"id": request["id"], "result": f"error: the sandbox failed "
                                                                        f"({type(e).__name__}: {e})"}).encode())
                    continue
                running.add(program)
                for pfd in program.fds():
                    owner[pfd] = program
                    poller.register(pfd, select.POLLIN)
                continue
            program = owner.get(fd)
            if program is None:
                continue
            if program in dying:  # its pidfd: the killed program is gone
                if os.waitpid(program.pid, os.WNOHANG)[0]:
                    forget(program, poller, owner)
                    dying.discard(program)
                continue
            advance(program, fd, limits, poller, owner)
        now = time.monotonic()
        for program in list(running):
            if program.pidfd is None and program.status is None:
                done, status = os.waitpid(program.pid, os.WNOHANG)
                if done:
                    program.status = status
            if program.why is None and now >= program.deadline:
                program.why = f"timed out after {program.timeout:g} s"
            finished = program.status is not None and program.out_r is None and program.err_r is None
            if not finished and program.why is None:
                continue
            running.discard(program)
            sock.send(json.dumps({"id": program.key, "result": format_result(
                program.out, program.err, program.status or 0, program.why, limits)}).encode())
            if program.status is None:  # cut: killed now, reaped when it is gone
                kill(program.pid)
                close_pipes(program, poller, owner)
                dying.add(program)
            else:
                forget(program, poller, owner)
        for program in [p for p in dying if p.pidfd is None]:
            if os.waitpid(program.pid, os.WNOHANG)[0]:
                forget(program, poller, owner)
                dying.discard(program)


def close_pipes(program, poller, owner):
    for fd in (program.out_r, program.err_r):
        if fd is not None:
            unwatch(fd, poller, owner)
            os.close(fd)
    program.out_r = program.err_r = None


def forget(program, poller, owner):
    """Close everything the program left open here and remove its scratch (rlimits)."""
    close_pipes(program, poller, owner)
    if program.pidfd is not None:
        unwatch(program.pidfd, poller, owner)
        os.close(program.pidfd)
        program.pidfd = None
    if program.scratch and program.scratch != SCRATCH:
        shutil.rmtree(program.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
