"""Solve(equation): equations and systems with sympy, in MOSS's output format.

Input: equations separated by `;` (or `；` / newlines), e.g. `x+y=500;5x+8y=4000`. `^` is power,
implicit multiplication works (`4x+12=116`, `0.5(x+1)=3`), decimals are treated as exact
fractions, `pi`/`π` and `e` are the constants and `sqrt sin cos tan log ln exp abs` the functions.
An equation without `=` means `expr = 0`. The unknowns are every other name, found automatically.

Output, one line per unknown sorted by name, as in MOSS's released data:

    x = 0
    y = 500

Integers print exactly; other values with 15 significant digits (`x = 86.0869565217391`). When
there are several solutions, each solution's lines follow the previous one's
(`x^2=4` -> `x = -2\\nx = 2`), ordered by value. Only real solutions are kept.
`No result.` when there is no real solution, infinitely many (fewer independent equations than
unknowns), nothing to solve, a parse error, or the time/memory limit is hit.

Safety: the text is checked against a whitelist (no quotes, brackets, attribute access, `_` names
or Python keywords) before sympy's parser sees it, the parser gets no builtins, and by default
solving runs in a separate worker process with a time limit and a memory cap, so a pathological
input (`x = 10^10^10`) cannot hang or exhaust the caller.
"""

from __future__ import annotations

import json
import keyword
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Any, ClassVar

from datagen.procs import tied_popen_kwargs, watch_parent
from datagen.record import ToolResult
from datagen.tools.base import Bounds, Tool, ToolUnavailableError, register_tool


class SolveError(ValueError):
    """The equations cannot be parsed or have no unique finite set of real solutions."""


_ALLOWED_CHARS = re.compile(r"^[0-9A-Za-z_+\-*/^().=,\sπ]*$")
_ATTRIBUTE = re.compile(r"[A-Za-z_)]\s*\.|\.\s*[A-Za-z_(]")
_NAME = re.compile(r"[A-Za-zπ_][A-Za-z0-9_]*")
_TRANSLATE = str.maketrans(
    {"×": "*", "÷": "/", "−": "-", "–": "-", "·": "*", "；": ";", "（": "(", "）": ")", "，": ",", "＝": "="}
)


def _split_equations(text: str, max_length: int) -> list[str]:
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE)
    if len(text) > max_length:
        raise SolveError(f"longer than {max_length} characters")
    parts = [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]
    if not parts:
        raise SolveError("no equation")
    for p in parts:
        if not _ALLOWED_CHARS.match(p):
            bad = next(c for c in p if not _ALLOWED_CHARS.match(c))
            raise SolveError(f"character {bad!r} not allowed")
        if _ATTRIBUTE.search(p):
            raise SolveError("attribute access not allowed")
        for name in _NAME.findall(p):
            if name.startswith("_") or keyword.iskeyword(name) or name in ("True", "False", "None"):
                raise SolveError(f"name {name!r} not allowed")
    return parts


def _parse(parts: list[str]) -> list[Any]:
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_application,
        implicit_multiplication,
        parse_expr,
        rationalize,
        standard_transformations,
    )

    transformations = standard_transformations + (
        implicit_multiplication,
        implicit_application,
        convert_xor,
        rationalize,
    )
    global_dict: dict[str, Any] = {
        "__builtins__": {},
        "Symbol": sympy.Symbol,
        "Function": sympy.Function,
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "pi": sympy.pi,
        "π": sympy.pi,
        "e": sympy.E,
        "E": sympy.E,
        "sqrt": sympy.sqrt,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "asin": sympy.asin,
        "acos": sympy.acos,
        "atan": sympy.atan,
        "log": sympy.log,
        "ln": sympy.log,
        "exp": sympy.exp,
        "Abs": sympy.Abs,
        "abs": sympy.Abs,
    }
    equations = []
    for p in parts:
        sides = p.split("=")
        if len(sides) > 2 or any(not s.strip() for s in sides):
            raise SolveError(f"not an equation: {p!r}")
        try:
            exprs = [
                parse_expr(
                    s.replace("π", " pi "),
                    local_dict={},
                    global_dict=global_dict,
                    transformations=transformations,
                )
                for s in sides
            ]
        except Exception as exc:  # sympy raises SyntaxError, TypeError, TokenError, ...
            raise SolveError(f"cannot parse {p!r}: {type(exc).__name__}") from None
        if any(e.atoms(sympy.core.function.AppliedUndef) for e in exprs):
            raise SolveError(f"unknown function in {p!r}")
        equations.append(sympy.Eq(exprs[0], exprs[1]) if len(exprs) == 2 else sympy.Eq(exprs[0], 0))
    return equations


def _format_value(value: Any) -> str | None:
    """`26` for integers, 15 significant digits otherwise; None for a non-real value."""
    import sympy

    if value.is_Integer:
        return str(int(value))
    num = sympy.N(value, 15)
    re_part, im_part = num.as_real_imag()
    if not (re_part.is_number and im_part.is_number):
        return None
    if abs(im_part) > 1e-12 * max(1, abs(re_part)):
        return None
    re_part = sympy.Float(re_part, 15)
    if re_part == int(re_part) and abs(re_part) < 1e15:
        return str(int(re_part))
    return str(re_part)


def solve_equations(text: str, *, max_length: int = 1000) -> str:
    """Solve `;`-separated equations and return MOSS's result lines (see module docstring).

    Raises SolveError for `No result.` cases. Runs in the calling process with no time limit: use
    `SolveTool` for untrusted input.
    """
    import sympy

    equations = _parse(_split_equations(text, max_length))
    if any(eq is sympy.false for eq in equations):
        raise SolveError("contradictory equation")
    equations = [eq for eq in equations if eq is not sympy.true]
    symbols = sorted(
        set().union(*(eq.free_symbols for eq in equations)) if equations else set(), key=lambda s: s.name
    )
    if not symbols:
        raise SolveError("no unknowns")
    try:
        solutions = sympy.solve(equations, symbols, dict=True)
    except (NotImplementedError, ValueError, TypeError) as exc:
        raise SolveError(f"sympy cannot solve it: {type(exc).__name__}") from None
    rendered: list[tuple[tuple[float, ...], list[str]]] = []
    for sol in solutions:
        if set(sol) != set(symbols) or any(sol[s].free_symbols for s in symbols):
            raise SolveError("infinitely many solutions")
        lines: list[str] = []
        key: list[float] = []
        for s in symbols:
            shown = _format_value(sol[s])
            if shown is None:
                break
            lines.append(f"{s.name} = {shown}")
            key.append(float(sympy.re(sympy.N(sol[s]))))
        else:
            rendered.append((tuple(key), lines))
    if not rendered:
        raise SolveError("no real solution")
    rendered.sort(key=lambda kv: kv[0])
    return "\n".join(line for _, lines in rendered for line in lines)


def _worker_loop(memory_mb: int, max_length: int) -> None:
    """The isolated worker (`python -m datagen.tools.solver MEMORY_MB MAX_LENGTH`): reads one JSON
    string per line on stdin, answers one JSON object per line on stdout: `{"ready": true}` once
    sympy is imported, then `{"ok": true, "out": lines}` or `{"ok": false, "out": reason}`."""
    # Exit with the datagen process that started us, even in the middle of a solve (the parent's
    # death signal covers a solve stuck in C code, which this thread would wait on for the GIL).
    watch_parent()
    if memory_mb:
        try:
            import resource

            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    import sympy  # noqa: F401  (import once, before the first request)

    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers may reach the pipe

    def answer(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    answer({"ready": True})
    for line in sys.stdin:
        try:
            text = json.loads(line)
        except json.JSONDecodeError:
            answer({"ok": False, "out": "bad request"})
            continue
        try:
            answer({"ok": True, "out": solve_equations(text, max_length=max_length)})
        except SolveError as exc:
            answer({"ok": False, "out": str(exc)})
        except MemoryError:
            answer({"ok": False, "out": "memory limit"})
        except Exception as exc:  # a sympy bug on odd input must not kill the worker
            answer({"ok": False, "out": f"{type(exc).__name__}: {exc}"})


class _Worker:
    """One solver subprocess, restarted after a timeout or crash; calls are serialised by a lock.

    A plain `python -m` subprocess (not multiprocessing) so that it never re-imports the caller's
    `__main__` and works from threads, notebooks and scripts without a main guard.
    """

    def __init__(self, *, timeout: float, memory_mb: int, max_length: int, start_timeout: float = 60.0):
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.max_length = max_length
        self.start_timeout = start_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: Any = None

    def _start(self) -> None:
        import datagen

        env = dict(os.environ)
        root = str(Path(datagen.__file__).resolve().parents[1])  # works from a checkout too
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._stderr = stderr = tempfile.TemporaryFile()
        cmd = [sys.executable, "-m", "datagen.tools.solver", str(self.memory_mb), str(self.max_length)]
        started: queue.Queue[subprocess.Popen | Exception] = queue.Queue()
        lines: queue.Queue[str | None] = queue.Queue()

        def keeper() -> None:
            # The worker is started by this thread, which lives as long as the worker does (it
            # reads its answers): the kernel's parent-death signal (tied_popen_kwargs) fires when
            # the *thread* that forked ends, and tool calls come from short-lived threads.
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=env,
                    text=True,
                    encoding="utf-8",
                    bufsize=1,
                    **tied_popen_kwargs(),
                )
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                started.put(exc)
                return
            started.put(proc)
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    lines.put(line)
            except (OSError, ValueError):  # the pipe was closed by _kill
                pass
            lines.put(None)  # EOF: the worker exited

        threading.Thread(target=keeper, name="datagen-solver-worker", daemon=True).start()
        proc = started.get()
        if isinstance(proc, Exception):
            raise ToolUnavailableError(f"cannot start the solver worker: {proc}") from proc
        self._proc, self._lines = proc, lines
        try:
            first = lines.get(timeout=self.start_timeout)
        except queue.Empty:
            first = None
        if first is None or not json.loads(first).get("ready"):
            detail = self._stderr_tail()
            self._kill()
            raise ToolUnavailableError(f"the solver worker did not start: {detail or 'no output'}")

    def _stderr_tail(self) -> str:
        """The worker's last stderr line (why it failed to start)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    stream.close()
        if self._stderr is not None:
            self._stderr.close()
        self._proc = self._stderr = None

    def solve(self, text: str) -> tuple[str, str]:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(json.dumps(text) + "\n")
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._kill()
                return ("fail", "worker died")
            try:
                line = self._lines.get(timeout=self.timeout)
            except queue.Empty:
                self._kill()
                return ("fail", "time limit")
            if line is None:  # killed by the memory cap or crashed on this input
                self._kill()
                return ("fail", "worker died")
            reply = json.loads(line)
            return ("ok" if reply.get("ok") else "fail", str(reply.get("out", "")))

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()  # the worker's loop ends at EOF
                    self._proc.wait(2)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            self._kill()


@register_tool
class SolveTool(Tool):
    """The `solver` plugin: `Solve("x+y=500;5x+8y=4000")` -> `x = 0\\ny = 500`.

    Args:
        timeout: seconds one call may take before it gives `No result.` (isolated mode only).
        memory_mb: address-space cap of the worker process (0: none).
        isolate: run sympy in a worker process (default). False solves in the calling process:
            the runner gives up on a call after `time_limit` but cannot stop its thread, so this
            is only for trusted input.
        max_length: longest input accepted (characters).
    """

    name: ClassVar[str] = "Solve"
    plugin: ClassVar[str] = "solver"
    bounds: ClassVar[dict[str, Bounds]] = {
        "timeout": Bounds(above=0, high=3600),
        "memory_mb": Bounds(low=0),
        "max_length": Bounds(low=1, high=100_000),
    }

    def __init__(
        self, *, timeout: float = 10.0, memory_mb: int = 2048, isolate: bool = True, max_length: int = 1000
    ):
        self.timeout = timeout
        self.max_length = max_length
        self.isolate = isolate
        self._worker = (
            _Worker(timeout=timeout, memory_mb=memory_mb, max_length=max_length) if isolate else None
        )
        if (
            self._worker is not None
        ):  # above a first call's start, solve and kill, so the worker's own limit acts first
            self.time_limit = self._worker.start_timeout + timeout + 15.0
        self.last_reason: str | None = None  # why the last call gave No result (for logs)

    def run(self, arg: str) -> ToolResult:
        if self._worker is None:
            try:
                status, payload = "ok", solve_equations(arg, max_length=self.max_length)
            except SolveError as exc:
                status, payload = "fail", str(exc)
        else:
            status, payload = self._worker.solve(arg)
        if status != "ok":
            self.last_reason = payload
            return self.no_result(arg)
        self.last_reason = None
        return self.ok(arg, payload)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


if __name__ == "__main__":
    _worker_loop(int(sys.argv[1]), int(sys.argv[2]))
