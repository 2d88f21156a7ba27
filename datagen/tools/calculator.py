"""Calculate(expression): a safe arithmetic evaluator (a small recursive-descent parser, no `eval`).

Numbers follow Python's rules, which is what MOSS's released data shows: integer arithmetic is
exact (`23*47+12` -> `1093`, `7^2` -> `49`), `/` is true division and gives a float
(`24/4` -> `6.0`, `8400/7` -> `1200.0`), and floats print as Python's `repr`
(`29-24.7` -> `4.300000000000001`). Anything that cannot be evaluated (unknown names such as
`鸡蛋单价*10`, division by zero, a result too large) gives MOSS's `No result.`

Syntax:
- `+ - * /`, `^` or `**` for power (right-associative; `-2^2` is -4), `//` floor division,
  parentheses, implicit multiplication before a name or a parenthesis (`2pi`, `3(4+5)`);
- `%` after a value is a percent (`50*20%` -> 10.0, `6.6%-6.7%`) unless another value follows,
  then it is the remainder (`10%3` -> 1); `!` is factorial;
- full-width digits and operators, `×`, `÷` and `−` are accepted;
- constants `pi` (`π`), `e`; functions `sqrt cbrt abs round floor ceil exp ln log lg log2 log10
  sin cos tan asin acos atan sinh cosh tanh degrees radians factorial gcd lcm min max pow`.
  `log(x)` and `lg(x)` are base 10 (calculator convention), `ln(x)` is natural, `log(x, b)` is
  base b. Trigonometric functions take radians.

Limits (constructor options): `max_length` characters of input, `max_digits` digits of an integer
(any step, a literal, or `round`'s digits argument), `max_factorial`; exceeding one gives
`No result.` instead of hanging. Every operation is checked before it runs, not after, so an
evaluation is provably cheap: at most `max_length` tokens, each an operation on numbers of at most
`max_digits` digits. A power's size is estimated from its operands (`2^10^9` fails at once),
`round(5, -(10^9))` fails on its digits argument, and a factorial on `max_factorial`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from datagen.record import ToolResult
from datagen.tools.base import Bounds, Tool, check_options, register_tool

Number = int | float

#: Highest settings the limits may take, so that every evaluation stays cheap: at most
#: MAX_LENGTH_LIMIT tokens, each an operation on integers of at most MAX_DIGITS_LIMIT digits
#: (Python's own cap on int <-> str conversion, `sys.int_info.default_max_str_digits`).
MAX_LENGTH_LIMIT = 100_000
MAX_DIGITS_LIMIT = 4300
MAX_FACTORIAL_LIMIT = 10_000


class CalculationError(ValueError):
    """The expression cannot be evaluated; the message says why."""


_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_\u03c0][A-Za-z0-9_]*)"
    r"|(?P<op>\*\*|//|[-+*/^%!(),])"
    r")"
)
_TRANSLATE = str.maketrans(
    {"×": "*", "÷": "/", "−": "-", "–": "-", "·": "*", "（": "(", "）": ")", "，": ",", "＾": "^"}
)


@dataclass(slots=True)
class _Tok:
    kind: str  # num, name, op, end
    text: str


def _tokenize(text: str) -> list[_Tok]:
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).strip()
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise CalculationError(f"unexpected character {text[pos]!r} at {pos}")
        kind = m.lastgroup or "op"
        toks.append(_Tok(kind, m.group(kind)))
        pos = m.end()
    toks.append(_Tok("end", ""))
    return toks


def _cbrt(x: Number) -> float:
    return math.copysign(abs(x) ** (1 / 3), x)


def _log(x: Number, base: Number | None = None) -> float:
    if base is None:
        return math.log10(x)
    return math.log(x, base)


def _as_int(x: Number, what: str) -> int:
    if isinstance(x, float):
        if not x.is_integer():
            raise CalculationError(f"{what} needs an integer, got {x!r}")
        return int(x)
    return x


_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "cbrt": _cbrt,
    "abs": abs,
    "floor": math.floor,
    "ceil": math.ceil,
    "exp": math.exp,
    "ln": math.log,
    "log": _log,
    "lg": math.log10,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "min": min,
    "max": max,
    "gcd": lambda *a: math.gcd(*(_as_int(x, "gcd") for x in a)),
    "lcm": lambda *a: math.lcm(*(_as_int(x, "lcm") for x in a)),
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "π": math.pi, "e": math.e, "PI": math.pi}


class _Parser:
    """Recursive descent over the token list; evaluates as it parses."""

    def __init__(self, toks: list[_Tok], *, max_digits: int, max_factorial: int, max_depth: int = 60):
        self.toks = toks
        self.i = 0
        self.max_digits = max_digits
        self.int_limit = 10**max_digits  # results must stay below it: exact, and cheap to compare
        self.max_bits = int(max_digits * math.log2(10)) + 1  # for estimating a power before computing it
        self.max_factorial = max_factorial
        self.max_depth = max_depth
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def _next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def _expect(self, text: str) -> None:
        if self.tok.text != text or self.tok.kind != "op":
            raise CalculationError(f"expected {text!r}, found {self.tok.text or 'end of input'!r}")
        self.i += 1

    def _starts_operand(self, t: _Tok) -> bool:
        return t.kind in ("num", "name") or (t.kind == "op" and t.text == "(")

    def _check(self, v: object) -> Number:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CalculationError(f"result is not a real number: {v!r}")
        if isinstance(v, int):
            if abs(v) >= self.int_limit:
                raise CalculationError("integer result too large")
        elif not math.isfinite(v):
            raise CalculationError("result is not finite")
        return v

    def parse(self) -> Number:
        v = self.expr()
        if self.tok.kind != "end":
            raise CalculationError(f"unexpected {self.tok.text!r}")
        return v

    def expr(self) -> Number:
        self.depth += 1
        if self.depth > self.max_depth:
            raise CalculationError("expression nested too deeply")
        v = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self._next().text
            rhs = self.term()
            v = self._check(v + rhs if op == "+" else v - rhs)
        self.depth -= 1
        return v

    def term(self) -> Number:
        v = self.unary()
        while True:
            t = self.tok
            if t.kind == "op" and t.text in ("*", "/", "//", "%"):
                self._next()
                rhs = self.unary()
                if t.text == "*":
                    v = v * rhs
                elif t.text == "/":
                    v = v / rhs
                elif t.text == "//":
                    v = v // rhs
                else:
                    v = v % rhs
                v = self._check(v)
            elif t.kind == "name" or (t.kind == "op" and t.text == "("):
                v = self._check(v * self.unary())  # implicit multiplication: 2pi, 3(4+5)
            else:
                return v

    def unary(self) -> Number:
        if self.tok.kind == "op" and self.tok.text in "+-":
            op = self._next().text
            self.depth += 1
            if self.depth > self.max_depth:
                raise CalculationError("too many signs in a row")
            v = self.unary()
            self.depth -= 1
            return -v if op == "-" else v
        return self.power()

    def power(self) -> Number:
        base = self.postfix()
        if self.tok.kind == "op" and self.tok.text in ("^", "**"):
            self._next()
            exp = self.unary()  # right-associative; binds tighter than a leading minus on the left
            return self._pow(base, exp)
        return base

    def _pow(self, base: Number, exp: Number) -> Number:
        if base == 0 and exp < 0:
            raise CalculationError("zero to a negative power")
        if base != 0 and abs(base) != 1:
            # estimate the size of the result before computing it: 2^10^9 must fail fast
            if float(exp) * math.log2(abs(base)) > self.max_bits:
                raise CalculationError("power too large")
        return self._check(base**exp)

    def postfix(self) -> Number:
        v = self.atom()
        while self.tok.kind == "op" and self.tok.text in ("%", "!"):
            if self.tok.text == "%":
                if self._starts_operand(self.toks[self.i + 1]):
                    break  # `a % b`: remainder, handled by term()
                self._next()
                v = self._check(v / 100)
            else:
                self._next()
                v = self._factorial(v)
        return v

    def _round(self, args: list[Number]) -> Number:
        if len(args) not in (1, 2):
            raise CalculationError("round takes one or two arguments")
        if len(args) == 1:
            return self._check(round(args[0]))
        x, ndigits = args
        if not isinstance(ndigits, int):
            raise CalculationError("round() digits must be an integer")
        # round(5, -n) on an int computes 10**n first: n = 10^9 would run for hours.
        if abs(ndigits) > self.max_digits:
            raise CalculationError("round() digits out of range")
        return self._check(round(x, ndigits))

    def _factorial(self, v: Number) -> int:
        n = _as_int(v, "factorial")
        if n < 0:
            raise CalculationError("factorial of a negative number")
        if n > self.max_factorial or math.lgamma(n + 1) / math.log(2) > self.max_bits:
            raise CalculationError("factorial too large")
        return self._check(math.factorial(n))

    def atom(self) -> Number:
        t = self._next()
        if t.kind == "num":
            if len(t.text) > self.max_digits:
                raise CalculationError("number too long")
            try:
                return int(t.text) if re.fullmatch(r"\d+", t.text) else self._check(float(t.text))
            except ValueError:
                raise CalculationError(f"bad number {t.text!r}") from None
        if t.kind == "op" and t.text == "(":
            v = self.expr()
            self._expect(")")
            return v
        if t.kind == "name":
            name = t.text
            if self.tok.kind == "op" and self.tok.text == "(":
                return self._call(name)
            if name in _CONSTANTS:
                return _CONSTANTS[name]
            raise CalculationError(f"unknown name {name!r}")
        raise CalculationError(f"unexpected {t.text or 'end of input'!r}")

    def _call(self, name: str) -> Number:
        if name not in _FUNCTIONS and name not in ("factorial", "pow", "round"):
            raise CalculationError(f"unknown function {name!r}")
        self._expect("(")
        args: list[Number] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.expr())
            while self.tok.kind == "op" and self.tok.text == ",":
                self._next()
                args.append(self.expr())
        self._expect(")")
        if name == "factorial":
            if len(args) != 1:
                raise CalculationError("factorial takes one argument")
            return self._factorial(args[0])
        if name == "pow":
            if len(args) != 2:
                raise CalculationError("pow takes two arguments")
            return self._pow(args[0], args[1])
        if name == "round":
            return self._round(args)
        try:
            return self._check(_FUNCTIONS[name](*args))
        except TypeError:
            raise CalculationError(f"wrong arguments for {name}()") from None


def evaluate(
    expression: str, *, max_length: int = 1000, max_digits: int = 1000, max_factorial: int = 1000
) -> Number:
    """Evaluate an arithmetic expression (syntax in the module docstring).

    Returns an int (exact) or a float. Raises CalculationError when it cannot be evaluated.
    """
    for name, value, high in (
        ("max_length", max_length, MAX_LENGTH_LIMIT),
        ("max_digits", max_digits, MAX_DIGITS_LIMIT),
        ("max_factorial", max_factorial, MAX_FACTORIAL_LIMIT),
    ):
        if not 0 <= value <= high:
            raise ValueError(f"{name} must be between 0 and {high}, got {value!r}")
    if len(expression) > max_length:
        raise CalculationError(f"expression longer than {max_length} characters")
    parser = _Parser(_tokenize(expression), max_digits=max_digits, max_factorial=max_factorial)
    try:
        return parser.parse()
    except CalculationError:
        raise
    except (ArithmeticError, ValueError, TypeError, RecursionError, IndexError) as exc:
        raise CalculationError(f"{type(exc).__name__}: {exc}") from None


def format_number(value: Number) -> str:
    """MOSS's rendering: ints in full, floats as Python's repr (`6.0`, `4.300000000000001`)."""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0.0"  # no "-0.0"
    return repr(value)


@register_tool
class CalculateTool(Tool):
    """The `calculator` plugin: `Calculate("23*47+12")` -> `1093`.

    Args:
        max_length: longest expression accepted (characters).
        max_digits: most decimal digits of an integer result, literal or `round` digits (guards
            `2^10^9`, `round(5, -(10^9))`); at most 4300, Python's own int-to-str limit.
        max_factorial: largest n accepted by `n!` / `factorial(n)`.
    """

    name: ClassVar[str] = "Calculate"
    plugin: ClassVar[str] = "calculator"
    bounds: ClassVar[dict[str, Bounds]] = {
        "max_length": Bounds(low=1, high=MAX_LENGTH_LIMIT),
        "max_digits": Bounds(low=1, high=MAX_DIGITS_LIMIT),
        "max_factorial": Bounds(low=0, high=MAX_FACTORIAL_LIMIT),
    }

    def __init__(self, *, max_length: int = 1000, max_digits: int = 1000, max_factorial: int = 1000):
        check_options(
            type(self),
            {"max_length": max_length, "max_digits": max_digits, "max_factorial": max_factorial},
            "tools.calculator",
        )
        self.max_length = max_length
        self.max_digits = max_digits
        self.max_factorial = max_factorial

    def run(self, arg: str) -> ToolResult:
        try:
            value = evaluate(
                arg, max_length=self.max_length, max_digits=self.max_digits, max_factorial=self.max_factorial
            )
            text = format_number(value)
        except (CalculationError, ValueError):  # ValueError: a process-wide int-to-str limit below ours
            return self.no_result(arg)
        return self.ok(arg, text)
