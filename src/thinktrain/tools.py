"""Tools a model calls while it thinks, and the one registry recipes name them from (`tools: [calculator]`).

A tool is a plain typed Python function with a docstring (TRL's contract: its name, type hints and docstring
become the JSON schema the chat template shows). GRPOTrainer's own tool loop runs them during rollouts;
`thinktrain eval --tools` and expert iteration run them through generation.generate_with_tools, which follows
TRL's loop step for step. A tool never raises and never hangs on any string: a bad call returns an error string
the model reads.

`python` runs model-written programs in thinktrain.sandbox (isolated by the kernel, not by reading the code).
Every tool a recipe names, users' own included, is bounded in time: load_tools wraps each as an async function that
answers within `tool_timeout` seconds (TRL gathers async tools with asyncio) and turns a hang or an exception into
an error string, counted in FAULTS.

The calculator's engine (exact rational arithmetic, shared with the `arithmetic` reward) is thinktrain.arithmetic;
loading a 'pkg.mod:fn' tool is thinktrain.callables, shared with rewards.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections import Counter
from collections.abc import Callable

from .arithmetic import CalcError, exact, show
from .callables import Wording, load_callable
from .errors import RecipeError, one_line, suggest
from .sandbox import MECHANISMS, OUTPUT_CHARS, Sandbox

TOOL_TIMEOUT = 10.0  # seconds: the default of the tool_timeout key
FAULTS: Counter = Counter()  # "timeouts" / "errors" of wrapped tools in this process (the run log reports them)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly and return the result.

    Args:
        expression: Numbers with + - * / ( ), decimals, percents and thousands separators, e.g. "48/2" or
            "(12 + 8) * 1,000".
    """
    try:
        return show(exact(expression))
    except CalcError as e:
        return f"error: {e}"
    except Exception as e:  # never raise into the rollout; never expected
        return f"error: {type(e).__name__}"


def sandbox_seconds(timeout: float) -> float:
    """A program's deadline under tool_timeout `timeout`: half a second less (a quarter less below 2 s), left for
    the fork and the reply, so the model reads the sandbox's own "timed out after N s" for a killed program, not
    bounded's message for a call it gave up on."""
    return max(timeout - 0.5, 0.75 * timeout)


def python_tool(mechanism: str = "namespaces", timeout: float = TOOL_TIMEOUT) -> Callable:
    """The `python` tool, running each program in its own Sandbox(mechanism), killed after sandbox_seconds(timeout).
    Its worker starts on the first call (load_tools starts it at once, to refuse a machine that cannot isolate)."""
    box = Sandbox(mechanism, timeout=sandbox_seconds(timeout))

    async def python(code: str) -> str:
        """Run a Python program and return what it prints.

        Args:
            code: A complete Python 3 program (standard library only; no files kept, no network); print the values
                you need, e.g. "print(48 / 2)".
        """
        return await box.run(code)

    python.__doc__ = python.__doc__.replace("what it prints.", f"what it prints (at most {OUTPUT_CHARS} characters).")
    python.sandbox = box
    return python


# --------------------------------------------------------------------------- deadlines


class ToolExited(Exception):
    """A tool raised SystemExit (sys.exit) or another BaseException that is not an error: here it is one."""


def _as_error(e: BaseException) -> Exception:
    return e if isinstance(e, Exception) else ToolExited(f"it raised {type(e).__name__}" + (f": {e}" if str(e) else ""))


def _in_thread(fn, kwargs) -> concurrent.futures.Future:
    """Run a sync tool on its own daemon thread: a pool's worker stuck in a hung tool would starve later calls.
    (Python cannot kill a thread: a tool that never returns keeps its thread; the count is in FAULTS.)"""
    future = concurrent.futures.Future()

    def work():
        try:
            future.set_result(fn(**kwargs))
        except BaseException as e:  # noqa: BLE001  (sys.exit too: the tool's error string, not the trainer's exit)
            future.set_exception(_as_error(e))

    threading.Thread(target=work, daemon=True, name=f"tool {fn.__name__}").start()
    return future


async def _awaited(fn, kwargs):
    """An async tool, its SystemExit an error: asyncio re-raises SystemExit out of the event loop, ending it.
    (Cancellation, a closed coroutine's GeneratorExit and Ctrl-C pass: they are the caller's, not the tool's.)"""
    try:
        return await fn(**kwargs)
    except SystemExit as e:
        raise _as_error(e) from None


def bounded(fn: Callable, seconds: float) -> Callable:
    """`fn` as an async tool that answers within `seconds`: a hang becomes "error: tool 'x' timed out after N s",
    an exception (sys.exit included) "error: ..."; never raises. Same name, docstring and type hints, so the same
    JSON schema."""
    name, is_async = fn.__name__, inspect.iscoroutinefunction(fn)

    @functools.wraps(fn)
    async def tool(**kwargs):
        try:
            call = _awaited(fn, kwargs) if is_async else asyncio.wrap_future(_in_thread(fn, kwargs))
            return await asyncio.wait_for(call, seconds)
        except asyncio.TimeoutError:
            FAULTS["timeouts"] += 1
            return f"error: tool '{name}' timed out after {seconds:g} s"
        except Exception as e:  # the model reads it; TRL would read {'error': ...} for a raised one
            FAULTS["errors"] += 1
            return f"error: {one_line(e)}"

    tool.__thinktrain_bounded__ = fn
    return tool


# --------------------------------------------------------------------------- registry

TOOLS: dict[str, Callable] = {"calculator": calculator, "python": python_tool()}

# how a 'pkg.mod:fn' tool that cannot be loaded is refused (the names, {known}, are TOOLS')
_WORDING = Wording(
    malformed="tools: '{path}' is neither a built-in tool ({known}) nor 'pkg.module:function'",
    unimportable="tools: cannot import '{path}': {error}",
    missing="tools: '{path}': module '{module}' has no function '{attr}'",
    not_callable="tools: '{path}': module '{module}' has no function '{attr}'",
)


def load_tools(names, timeout: float = TOOL_TIMEOUT, sandbox: str = "namespaces") -> list[Callable]:
    """Recipe tool names (built-in or 'pkg.mod:fn') -> functions, each checked the way TRL will read it and bounded
    by `timeout` seconds (tool_timeout); `python` isolated by `sandbox` (python_sandbox), refused in one line where
    this machine cannot provide it."""
    from transformers.utils import get_json_schema

    if isinstance(names, str):
        names = [names]
    out = []
    for name in names or []:
        if not isinstance(name, str) or not name.strip():
            raise RecipeError(f"tools: each entry must be a tool name, got {name!r}")
        if name == "python":
            fn = _python(sandbox, timeout)
        elif name in TOOLS:
            fn = TOOLS[name]
        elif ":" in name or "." in name:
            fn = load_callable(name, _WORDING, RecipeError, known=", ".join(TOOLS))
        else:
            raise RecipeError(f"tools: unknown tool '{name}'{suggest(name, TOOLS)}; built-in: {', '.join(TOOLS)}, "
                              f"or give 'pkg.module:function'")
        try:
            get_json_schema(fn)
        except Exception as e:  # no type hints, no docstring, an undocumented argument
            raise RecipeError(f"tools: '{name}' can't be offered to the model: {one_line(e)} (a tool needs type hints "
                              f"and a Google-style docstring with an Args: section)") from None
        out.append(fn)
    out = [bounded(fn, timeout) for fn in out]
    names_seen = [fn.__name__ for fn in out]
    if len(set(names_seen)) < len(names_seen):
        raise RecipeError(f"tools: two tools share a name ({', '.join(names_seen)}); the model calls tools by name")
    return out


def _python(mechanism: str, timeout: float) -> Callable:
    """The python tool, its sandbox started and tried on a program now, before any model loads."""
    if mechanism not in MECHANISMS:
        raise RecipeError(f"python_sandbox: '{mechanism}' is not one of: {', '.join(MECHANISMS)}")
    fn = python_tool(mechanism, timeout)
    why = fn.sandbox.check()
    if why is None:
        return fn
    fix = ("allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; on Ubuntu 24.04 also "
           "kernel.apparmor_restrict_unprivileged_userns=0), or set python_sandbox: rlimits (weaker: docs/tools.md)"
           if mechanism == "namespaces" else "the python tool needs Linux on x86-64 or aarch64 (seccomp)")
    raise RecipeError(f"python_sandbox: {mechanism} isolation is not available on this machine ({why}); {fix}")


def prepare_tokenizer(tokenizer, tools):
    """Make `tokenizer` ready for TRL's tool loop, or refuse in one line (before the model loads): its chat
    template must render tool calls and replies (TRL's supports_tool_calling), and parse_response must be able to
    read calls back (a response_template: thinktrain's scratch tokenizers carry theirs, TRL knows Qwen2.5/Qwen3/
    Llama 3.1 and others)."""
    from trl.chat_template_utils import add_response_schema, supports_tool_calling

    from .tokenizer import CHAT_TEMPLATE, RESPONSE_TEMPLATE

    if not tools:
        return tokenizer
    name = getattr(tokenizer, "name_or_path", "") or "the model"
    if not supports_tool_calling(tokenizer):
        raise RecipeError(f"tools: the chat template of {name} cannot render tool calls and tool replies; use a "
                          f"model whose template can (Qwen2.5, Qwen3, a thinktrain scratch model), or remove tools")
    if getattr(tokenizer, "response_template", None) is None and getattr(tokenizer, "response_schema", None) is None:
        if tokenizer.chat_template == CHAT_TEMPLATE:  # a thinktrain tokenizer saved before tools existed
            tokenizer.response_template = RESPONSE_TEMPLATE
        else:
            try:
                add_response_schema(tokenizer)
            except ValueError:
                raise RecipeError(f"tools: TRL cannot read tool calls back from the chat template of {name} (no "
                                  f"response_template, and not a template it knows); set tokenizer.response_template "
                                  f"in the model folder's tokenizer_config.json, or use Qwen2.5/Qwen3") from None
    return tokenizer


def tool_calls(completion) -> int:
    """How many tool calls a completion (a message list) made; 0 for a plain string."""
    if not isinstance(completion, (list, tuple)):
        return 0
    return sum(len(m.get("tool_calls") or []) for m in completion if isinstance(m, dict)
               and m.get("role", "assistant") == "assistant")
