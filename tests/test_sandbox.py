"""The python tool's sandbox against hostile programs (each answers with an error string, in time, and the test
process and the sandbox stay unharmed), and the deadline every tool gets (tools.bounded)."""

import asyncio
import concurrent.futures
import contextlib
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thinktrain.errors import RecipeError
from thinktrain.sandbox import OUTPUT_CHARS, Sandbox, check_mechanism

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 2.0
SECRET = "hf_" + "Sandboxtestsecret" * 2  # shaped like a Hub token, fake


def _box(mechanism):
    why = check_mechanism(mechanism)
    if why:
        pytest.skip(f"{mechanism} not available here: {why}")
    box = Sandbox(mechanism, timeout=DEADLINE)
    assert box.check() is None
    return box


@pytest.fixture(scope="module", params=["namespaces", "rlimits"])
def box(request):
    b = _box(request.param)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ns():
    b = _box("namespaces")
    yield b
    b.close()


def run(box, code, limit=DEADLINE + 1.5):
    box.start()
    worker = box._proc
    started = time.perf_counter()
    out = box.run_sync(code)
    seconds = time.perf_counter() - started
    assert seconds < limit, f"{seconds:.1f}s: {out!r}"
    # the same worker answers: a dead one would be restarted, and the next program would run as if nothing happened
    assert box.run_sync("print(6 * 7)") == "42\n", "the sandbox must survive the program"
    assert box._proc is worker and worker.poll() is None, "the program killed the worker"
    return out


def test_programs_print_and_errors_are_one_line(box):
    assert run(box, "print(48 / 2)") == "24.0\n"
    assert run(box, "import math, fractions\nprint(math.comb(10, 3), fractions.Fraction(1, 3) * 3)") == "120 1\n"
    assert run(box, "1 / 0") == "error: ZeroDivisionError: division by zero"
    assert run(box, "print(") .startswith("error: SyntaxError")
    assert run(box, "import sys; sys.exit(3)") == "error: exit status 3"


def test_the_longest_program_reaches_the_sandbox_whatever_its_characters(box):
    from thinktrain.sandbox import MAX_CODE_CHARS

    emoji = "\U0001F600" * (MAX_CODE_CHARS - 30)
    assert run(box, f"s = '{emoji}'\nprint(len(s))") == f"{len(emoji)}\n"
    # a lone surrogate (not UTF-8) reaches it too; Python cannot compile it, which the model reads
    assert run(box, "s = '\ud800'").startswith("error: UnicodeEncodeError: 'utf-8' codec can't encode")


# --------------------------------------------------------------------------- resources: both mechanisms


def test_infinite_loop_is_cut_at_the_deadline(box):
    assert run(box, "while True: pass") == f"error: timed out after {DEADLINE:g} s"


def test_fork_bomb_and_child_processes_are_refused(box):
    assert run(box, "import os\nwhile True: os.fork()").startswith("error: PermissionError")
    marker = "1234.5678"  # a child left running must not outlive the call: none can start
    out = run(box, f"import os\nos.posix_spawn('/bin/sleep', ['sleep', '{marker}'], {{}})\nprint('started')")
    assert out.startswith("error: PermissionError"), out
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if marker in _read(p)]


def test_a_program_that_closes_its_output_still_meets_the_deadline(box):
    """Closed pipes are no sign the program ended: the worker watches its exit, and kills it at the deadline."""
    out = run(box, "import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)")
    assert out == f"error: timed out after {DEADLINE:g} s"


def test_many_lingering_programs_do_not_wedge_the_worker(box):
    """More programs than the worker runs at once (64), each closing its output and sleeping: all cut in time."""
    pid, started = box._proc.pid, time.perf_counter()
    futures = [box.submit("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)") for _ in range(70)]
    assert {f.result(4 * DEADLINE + 10) for f in futures} == {f"error: timed out after {DEADLINE:g} s"}
    assert time.perf_counter() - started < 4 * DEADLINE + 5
    assert box.run_sync("print(6 * 7)") == "42\n" and box._proc.pid == pid


@contextlib.contextmanager
def _stopped(box):
    """The worker (PID 1 of its namespace, the child of box._proc) stopped: it takes no programs meanwhile."""
    pid = box._proc.pid
    worker = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    os.kill(worker, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(worker, signal.SIGCONT)


BIG = "print(1)\n" + "#" * 19_000  # ~10 of these fill the worker's socket buffer


def test_a_worker_that_takes_no_programs_stalls_no_caller(ns):
    """Stopped here, its socket's buffer fills: each send waits a bounded time and the call answers busy."""
    pid = ns._proc.pid
    pool = concurrent.futures.ThreadPoolExecutor(1)
    with _stopped(ns):
        try:
            futures = pool.submit(lambda: [ns.submit(BIG, timeout=0.3) for _ in range(30)]).result(30)
        finally:
            pool.shutdown(wait=False)
    busy = [f.result() for f in futures if f.done()]
    assert busy and all(b.startswith("error: the sandbox is unavailable (busy") for b in busy), busy
    assert {f.result(10) for f in futures} <= {"1\n", *busy}
    assert ns.run_sync("print(6 * 7)") == "42\n" and ns._proc.pid == pid


def test_a_stuck_worker_does_not_block_the_event_loop(ns):
    """The async tool waits for room to send off the event loop: other tools (and timers) go on meanwhile."""
    async def calls_and_a_timer():
        with _stopped(ns):
            calls = [asyncio.ensure_future(ns.run(BIG, timeout=0.3)) for _ in range(30)]
            started = time.perf_counter()
            await asyncio.sleep(0.05)
            late = time.perf_counter() - started
            await asyncio.sleep(0.5)
        return late, await asyncio.gather(*calls)

    late, results = asyncio.run(calls_and_a_timer())
    assert late < 1.0, f"the event loop was blocked for {late:.1f} s"
    assert all(r == "1\n" or r.startswith("error: the sandbox is unavailable (busy") for r in results), results


def test_threads_left_running_end_with_the_program(box):
    out = run(box, "import threading, time\nthreading.Thread(target=time.sleep, args=(1000,)).start()\nprint('ok')")
    assert out == "ok\n"


def test_memory_is_bounded(box):
    assert run(box, "x = bytearray(16 << 30)") == "error: MemoryError"
    assert run(box, "x = [0] * (4 << 30)") == "error: MemoryError"


def test_a_gigabyte_of_output_is_cut(box):
    out = run(box, "import sys\nwhile True: sys.stdout.write('x' * 65536)")
    assert out == "x" * OUTPUT_CHARS + f"\n... (output truncated to {OUTPUT_CHARS} characters)"
    assert run(box, "print('y' * 3000)").startswith("y" * OUTPUT_CHARS + "\n... (output truncated")


def test_the_environment_is_empty(box, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    box.close()  # a worker started after the secret was set must not see it either
    out = run(box, "import os\nprint(dict(os.environ))")
    assert SECRET not in out and "HF_TOKEN" not in out and "PATH" in out
    out = run(box, "print(open('/proc/self/environ').read())")  # (as uid nobody: not readable at all)
    assert SECRET not in out and "HF_TOKEN" not in out


def test_a_file_too_large_is_refused(box):
    out = run(box, "open('big', 'wb').write(b'x' * (64 << 20))")
    assert out in ("error: file size limit exceeded", "error: OSError: [Errno 27] File too large",
                   "error: OSError: [Errno 28] No space left on device"), out


# --------------------------------------------------------------------------- isolation: namespaces


def _read(path):
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_secret_files_and_the_trainers_environ_are_unreachable(ns, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    token = tmp_path / "home" / ".cache" / "huggingface" / "token"
    token.parent.mkdir(parents=True)
    token.write_text(SECRET)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for path in (token, Path("/proc") / str(os.getpid()) / "environ", Path.home() / ".cache/huggingface/token"):
        out = run(ns, f"print(open({str(path)!r}).read())")
        assert SECRET not in out and out.startswith("error: FileNotFoundError"), (path, out)
    out = run(ns, "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())")
    assert SECRET not in out and out.startswith("error: "), out
    listing = run(ns, "import os\nprint(sorted(os.listdir('/')))")
    for hidden in ("home", "root", "tmp", "work", "etc", "var", "run", "sys"):
        assert f"'{hidden}'" not in listing or hidden == "root" and "/root/" in sys.base_prefix, listing


def test_signals_reach_nothing_outside(ns):
    """Pids the program might guess (the test's, a bystander's, its parent, -1 for all it may signal, 1): none
    outside its namespace dies; run() checks the worker survives too."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        for target in ("os.getppid()", str(os.getpid()), str(bystander.pid), "-1", "1"):
            out = run(ns, f"import os, signal\nos.kill({target}, signal.SIGKILL)\nprint('sent')")
            assert out in ("sent\n", "error: killed by SIGKILL") or out.startswith(("error: ProcessLookupError",
                                                                                       "error: PermissionError")), out
        assert bystander.poll() is None, "a process outside the sandbox was killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_each_program_is_alone_in_its_pid_namespace(ns):
    """One process per call, cloned straight into its own PID namespace: it is PID 1 there (its parent, the worker,
    is outside: 0) and its /proc lists no other program, so none running beside it can be seen or signalled."""
    sleeper = ns.submit("import time\ntime.sleep(1.5)\nprint('slept')")
    out = run(ns, "import os\nprint(os.getpid(), os.getppid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))")
    assert out == "1 0 ['1']\n", out
    assert sleeper.result(5) == "slept\n"


def test_nothing_is_written_outside_the_scratch(ns, tmp_path):
    targets = [tmp_path / "escaped", ROOT / "sandbox_escaped", Path("/tmp/thinktrain_sandbox_escaped"),
               Path.home() / "sandbox_escaped"]
    for target in targets:
        out = run(ns, f"open({str(target)!r}, 'w').write('x')\nprint('wrote')")
        assert out.startswith("error: "), out
        assert not target.exists()
    assert run(ns, "open('/usr/escaped', 'w')").startswith("error: OSError: [Errno 30] Read-only file system")
    assert run(ns, "open('kept', 'w').write('x')\nimport os\nprint(os.listdir('.'))") == "['kept']\n"
    assert run(ns, "import os\nprint(os.listdir('.'))") == "[]\n", "each program starts on an empty scratch"


_SYSV_KEY = 0x7454  # the segment a program tries to leave for the next one

_LEAVE_SHM = f"""import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget({_SYSV_KEY}, 4096, 0o1600)  # IPC_CREAT
if shmid < 0:
    raise OSError(ctypes.get_errno(), 'shmget')
addr = libc.shmat(shmid, None, 0)
ctypes.memmove(addr, b'left behind', 11)
print('made')
"""

_FIND_SHM = f"""import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget({_SYSV_KEY}, 0, 0)
print('seen ' + ctypes.string_at(libc.shmat(shmid, None, 0), 11).decode() if shmid >= 0 else 'unseen')
"""


def _remove_host_segment():
    """(rlimits shares the host's IPC namespace: a segment a program made there would outlive the test)"""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(_SYSV_KEY, 0, 0)
    if shmid >= 0:
        libc.shmctl(shmid, 0, None)  # IPC_RMID


def test_no_shared_memory_outlives_a_call(box):
    """SysV shared memory (and message queues, semaphores, POSIX queues) would carry data from one program to
    the next, or to the host: the calls are refused, and each program has its own IPC namespace besides."""
    try:
        made, found = run(box, _LEAVE_SHM), run(box, _FIND_SHM)
    finally:
        _remove_host_segment()
    assert made.startswith("error: PermissionError: [Errno 1]") and made.endswith("shmget"), made
    assert "seen left behind" not in found and found.startswith(("unseen", "error: PermissionError")), found


def test_each_program_has_its_own_ipc_namespace(ns):
    # both alive at once: a namespace's inode number is reused once it is gone
    code = "import os, time\nprint(os.readlink('/proc/self/ns/ipc'))\ntime.sleep(1)"
    spaces = {f.result(DEADLINE + 5) for f in [ns.submit(code) for _ in range(2)]}
    pid = ns._proc.pid
    worker = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    try:
        theirs = os.readlink(f"/proc/{worker}/ns/ipc") + "\n"  # (the worker is not dumpable: root reads it)
    except PermissionError:
        theirs = None
    assert len(spaces) == 2 and theirs not in spaces, spaces


_MOUNT_CALLS = {  # name: (x86-64 number, aarch64 number, arguments)
    "mount": (165, 40, "b'none', b'/scratch', b'tmpfs', L(0), None"),
    "umount2": (166, 39, "b'/proc', L(2)"),
    "pivot_root": (155, 41, "b'.', b'.'"),
    "unshare": (272, 97, "L(0x10000000)"),  # CLONE_NEWUSER
    "setns": (308, 268, "L(-1), L(0)"),
    "open_tree": (428, 428, "L(-100), b'/', L(1)"),  # AT_FDCWD, OPEN_TREE_CLONE
    "move_mount": (429, 429, "L(-1), b'', L(-1), b'', L(0)"),
    "fsopen": (430, 430, "b'tmpfs', L(0)"),
    "fsconfig": (431, 431, "L(-1), L(0), None, None, L(0)"),
    "fsmount": (432, 432, "L(-1), L(0), L(0)"),
    "fspick": (433, 433, "L(-100), b'/', L(0)"),
    "mount_setattr": (442, 442, "L(-1), b'', L(0), None, L(0)"),
    # a thread in a new user namespace (the kernel says EINVAL, if it is asked), a process in a new network one
    "clone thread NEWUSER": (56, 220, "L(0x10000000 | 0x10000 | 0x800 | 0x100), L(0), L(0), L(0), L(0)"),
    "clone NEWNET": (56, 220, "L(0x40000000 | 17), L(0), L(0), L(0), L(0)"),
    "clone3": (435, 435, "None, L(0)"),
}


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall numbers of x86-64/aarch64")
def test_mount_and_namespace_calls_are_refused(box):
    """The new mount API, mount/umount2/pivot_root/unshare/setns, and clone with a CLONE_NEW* flag: EPERM (clone3
    ENOSYS, so libc falls back to clone, whose flags the filter can read)."""
    column = 0 if os.uname().machine == "x86_64" else 1
    calls = "\n".join(f"got[{name!r}] = call({spec[column]}, {spec[2]})" for name, spec in _MOUNT_CALLS.items())
    code = ("import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\nL = ctypes.c_long\ngot = {}\n"
            "def call(nr, *args):\n    ctypes.set_errno(0)\n    r = libc.syscall(L(nr), *args)\n"
            "    return errno.errorcode.get(ctypes.get_errno(), r) if r == -1 else f'returned {r}'\n"
            f"{calls}\nprint(got)")
    got = eval(run(box, code))
    assert got == {name: "ENOSYS" if name == "clone3" else "EPERM" for name in _MOUNT_CALLS}, got


def test_no_network(ns):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    out = run(ns, f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.send(b'hi')")
    assert out.startswith("error: ") and "unreachable" in out.lower(), out
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody knocked
    listener.close()


def test_rlimits_scratch_is_removed(tmp_path):
    box = _box("rlimits")
    before = set(Path("/tmp").glob("thinktrain-sandbox-*"))
    assert box.run_sync("open('f', 'w').write('x')\nimport os\nprint(os.getcwd())").startswith("/tmp/thinktrain-")
    box.close()
    assert set(Path("/tmp").glob("thinktrain-sandbox-*")) <= before


def test_rlimits_scratch_is_no_one_elses(tmp_path):
    """The scratch dir is 0700 (the program's own: uid nobody's when the trainer is root), never world-writable."""
    box = _box("rlimits")
    try:
        out = run(box, "import os\nopen('f', 'w').write('x')\nprint(oct(os.stat('.').st_mode & 0o777))")
    finally:
        box.close()
    assert out == "0o700\n", out


def test_programs_inherit_no_file_descriptors(box):
    code = ("import os\nheld = []\nfor fd in range(3, 1 << 13):\n    try:\n        os.fstat(fd)\n"
            "        held.append(fd)\n    except OSError:\n        pass\nprint(held)")
    assert run(box, code) == "[]\n"


def test_the_event_loop_never_waits_for_the_workers_lock(ns):
    """run() sends a program from the event loop itself only when that cannot block: while another thread holds
    the lock (starting or stopping the worker), it hands the call to a thread instead, and the result still comes."""
    assert ns.run_sync("print(1)") == "1\n"
    with ns._lock:
        assert ns._submit_at_once("print(2)", None) is None
    assert ns._submit_at_once("print(3)", None).result(DEADLINE + 5) == "3\n"
    held = threading.Thread(target=lambda: (ns._lock.acquire(), time.sleep(0.5), ns._lock.release()))
    held.start()
    time.sleep(0.05)
    assert asyncio.run(ns.run("print(4)")) == "4\n"
    held.join()


def test_a_failed_self_check_leaves_no_worker():
    box = Sandbox("rlimits", output_chars=1)  # "42" cut to "4": the test program's answer comes back wrong
    why = box.check()
    assert why is not None and why.startswith("a test program returned"), why
    assert box._proc is None and box._sock is None


def test_a_malformed_reply_is_an_error_string_not_a_crash():
    box = Sandbox("rlimits")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    waiting = [concurrent.futures.Future() for _ in range(2)]
    box._pending.update(enumerate(waiting))
    theirs.send(b'{"id": 0, "result": "ok"}')
    theirs.send(b"not json")
    box._read(None, ours)  # returns (raising would fail here): the worker is to be stopped, every caller answered
    assert waiting[0].result(0) == "ok"
    assert waiting[1].result(0) == "error: the sandbox sent a malformed reply (JSONDecodeError); try again"
    theirs.close()


def test_many_programs_at_once(ns):
    async def many():
        return await asyncio.gather(*(ns.run(f"print({i} * 2)") for i in range(64)))

    assert asyncio.run(many()) == [f"{i * 2}\n" for i in range(64)]


def test_a_dead_worker_is_restarted(ns):
    ns._proc.kill()
    ns._proc.wait()
    time.sleep(0.2)
    assert ns.run_sync("print(1)") == "1\n"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_a_machine_without_user_namespaces_is_named():
    """A cluster node that forbids user namespaces, made for real: user.max_user_namespaces=0 in a namespace."""
    code = ("import sys; sys.path.insert(0, 'src'); from thinktrain.sandbox import check_mechanism; "
            "print(check_mechanism('namespaces')); print(check_mechanism('rlimits'))")
    out = subprocess.run(["unshare", "-Ur", "sh", "-c", f"echo 0 > /proc/sys/user/max_user_namespaces && "
                          f"{os.path.realpath(sys.executable)} -c \"{code}\""], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "unshare" in lines[0] and ("No space left" in lines[0] or "not permitted" in lines[0]), lines
    assert lines[1] == "None"


# --------------------------------------------------------------------------- the tool and every tool's deadline


def sleeps_forever(seconds: int) -> str:
    """Sleep.

    Args:
        seconds: how long
    """
    time.sleep(10**6)
    return "never"


async def awaits_forever(seconds: int) -> str:
    """Sleep, asynchronously.

    Args:
        seconds: how long
    """
    await asyncio.sleep(10**6)
    return "never"


def raises(text: str, count: int | None = None) -> str:
    """Raise.

    Args:
        text: what to say
        count: how often
    """
    raise RuntimeError(f"broken on {text}")


def test_every_tool_is_bounded_and_keeps_its_schema():
    from transformers.utils import get_json_schema

    from thinktrain.tools import FAULTS, bounded

    before = FAULTS.copy()
    for fn in (sleeps_forever, awaits_forever):
        tool = bounded(fn, 0.3)
        assert inspect.iscoroutinefunction(tool) and tool.__name__ == fn.__name__  # TRL's test for async tools
        assert get_json_schema(tool) == get_json_schema(fn)
        started = time.perf_counter()
        assert asyncio.run(tool(seconds=1)) == f"error: tool '{fn.__name__}' timed out after 0.3 s"
        assert time.perf_counter() - started < 1.5
    tool = bounded(raises, 1)
    assert get_json_schema(tool) == get_json_schema(raises)
    assert asyncio.run(tool(text="x")) == "error: broken on x"
    assert FAULTS["timeouts"] - before["timeouts"] == 2 and FAULTS["errors"] - before["errors"] == 1


def test_load_tools_bounds_every_tool_and_builds_python(monkeypatch):
    from transformers.utils import get_json_schema

    from thinktrain.tools import TOOLS, calculator, load_tools

    tools = load_tools(["calculator", "python", "test_sandbox:sleeps_forever"], timeout=1,
                       sandbox=os.environ.get("THINKTRAIN_TEST_SANDBOX", "namespaces")
                       if check_mechanism("namespaces") is None else "rlimits")
    assert [t.__name__ for t in tools] == ["calculator", "python", "sleeps_forever"]
    assert get_json_schema(tools[0]) == get_json_schema(calculator)
    assert get_json_schema(tools[1]) == get_json_schema(TOOLS["python"])
    assert asyncio.run(tools[0](expression="48/2")) == "24"
    assert asyncio.run(tools[1](code="print(48 / 2)")) == "24.0\n"
    assert asyncio.run(tools[2](seconds=1)) == "error: tool 'sleeps_forever' timed out after 1 s"
    # the sandbox's deadline comes first, a little inside tool_timeout: the model reads that its program was cut
    assert asyncio.run(tools[1](code="while True: pass")) == "error: timed out after 0.75 s"
    assert asyncio.run(tools[1](code="print(6 * 7)")) == "42\n"
    tools[1].sandbox.close()


def exits(code: int) -> str:
    """Exit.

    Args:
        code: the status
    """
    sys.exit(code)


async def exits_async(code: int) -> str:
    """Exit, asynchronously.

    Args:
        code: the status
    """
    sys.exit(code)


def test_a_tool_calling_sys_exit_is_an_error_not_the_trainers_exit():
    from thinktrain.tools import FAULTS, bounded

    before = FAULTS["errors"]
    for fn in (exits, exits_async):
        try:
            out = asyncio.run(bounded(fn, 1)(code=3))
        except BaseException as e:  # noqa: BLE001
            pytest.fail(f"{fn.__name__}: bounded raised {e!r} into the caller")
        assert out == "error: it raised SystemExit: 3", out
    assert FAULTS["errors"] - before == 2


def test_unknown_tool_and_unavailable_sandbox_refuse_in_one_line(monkeypatch):
    from thinktrain.tools import load_tools

    with pytest.raises(RecipeError, match=r"^tools: unknown tool 'pyton' \(did you mean 'python'\?\)"):
        load_tools(["pyton"])
    monkeypatch.setattr(Sandbox, "check", lambda self: "PermissionError: [Errno 1] unshare: Operation not permitted")
    with pytest.raises(RecipeError) as e:
        load_tools(["python"])
    message = str(e.value)
    assert "\n" not in message and message.startswith("python_sandbox: namespaces isolation is not available on "
                                                      "this machine (PermissionError")
    assert "set python_sandbox: rlimits" in message


def test_generation_awaits_async_tools_all_at_once():
    from thinktrain.generation import _call_all
    from thinktrain.tools import bounded, calculator

    toolbox = {"calculator": bounded(calculator, 1), "raises": raises}
    call = lambda name, **a: {"type": "function", "function": {"name": name, "arguments": a}}  # noqa: E731
    assert _call_all(toolbox, [[call("calculator", expression="1+1")],
                               [call("calculator", expression="2*3"), call("raises", text="y"), call("nope")]]) == [
        [("calculator", "2")], [("calculator", "6"), ("raises", {"error": "broken on y"}),
                                ("nope", {"error": "Tool nope not found."})]]


def test_generation_calls_tools_from_inside_a_running_event_loop():
    """A notebook (or any async caller) already runs a loop: asyncio.run would refuse to start another there."""
    from thinktrain.generation import _call_all
    from thinktrain.tools import bounded, calculator

    toolbox = {"calculator": bounded(calculator, 1)}
    call = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "6*7"}}}

    async def notebook_cell():
        return _call_all(toolbox, [[call], [call]])

    assert asyncio.run(notebook_cell()) == [[("calculator", "42")], [("calculator", "42")]]
