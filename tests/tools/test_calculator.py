import json
import math
import subprocess
import sys

import pytest

from datagen.tools import NO_RESULT, get_tool
from datagen.tools.calculator import CalculateTool, CalculationError, evaluate, format_number


@pytest.fixture(scope="module")
def calc() -> CalculateTool:
    return CalculateTool()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("23*47+12", "1093"),
        ("7^2", "49"),  # MOSS: ^ is power, integer results print without .0
        ("7^2*4", "196"),
        ("24/4", "6.0"),  # MOSS renders true division as a float
        ("8400/7", "1200.0"),
        ("29-24.7", "4.300000000000001"),  # float repr, as in MOSS's data
        ("4*6.5*0.9", "23.400000000000002"),
        ("50*20%", "10.0"),
        ("6.6%-6.7%", "-0.0010000000000000009"),
        ("10%3", "1"),  # a value after % makes it the remainder
        ("2^3^2", "512"),  # right-associative
        ("-2^2", "-4"),
        ("2**10", "1024"),
        ("sqrt(16)", "4.0"),
        ("sqrt(2)", "1.4142135623730951"),
        ("log(1000)", "3.0"),  # log is base 10
        ("ln(e)", "1.0"),
        ("log(8, 2)", "3.0"),
        ("sin(pi/2)", "1.0"),
        ("5!", "120"),
        ("factorial(20)", "2432902008176640000"),
        ("abs(-3)+round(2.567, 2)", "5.57"),
        ("3(4+5)", "27"),
        ("2pi", "6.283185307179586"),
        ("（３＋４）×２÷7", "2.0"),
        ("2^100", "1267650600228229401496703205376"),  # exact big integers
        ("1e3+1", "1001.0"),
    ],
)
def test_values(calc, expr, expected):
    result = calc.run(expr)
    assert result.ok, expr
    assert result.output == expected
    assert result.name == "Calculate" and result.arg == expr


@pytest.mark.parametrize(
    "expr",
    [
        "1/0",
        "5%0",
        "__import__('os').system('echo hi')",
        "().__class__",
        "open('x')",
        "鸡蛋单价*10",  # a name MOSS could not evaluate either
        "sqrt((c/a)^2+(c/b)^2)",
        "2^10000",  # over the 1000-digit limit
        "2^2^2^2^2",
        "10^10^10",
        "9.9^999999",
        "factorial(5000)",
        "100000!",
        "sqrt(-1)",
        "(-8)^(1/3)",
        "1e308*10",
        "(1+2",
        "1+",
        "",
        "2 3",
        "(" * 500 + "1" + ")" * 500,
        "1" * 2000,
    ],
)
def test_no_result(calc, expr):
    result = calc.run(expr)
    assert not result.ok
    assert result.output == NO_RESULT


def test_limits_are_options():
    assert get_tool("calculator", max_digits=4000).run("2^10000").ok  # 3011 digits
    assert not get_tool("calculator", max_digits=10).run("10^11").ok
    assert get_tool("calculator", max_digits=10).run("10^9").output == "1000000000"
    assert not get_tool("calculator", max_digits=10).run("10^10").ok  # 11 digits
    assert not get_tool("calculator", max_digits=10).run("1" * 11 + "-1").ok  # a literal past max_digits


def test_evaluate_types_and_errors():
    assert evaluate("2+3") == 5 and isinstance(evaluate("2+3"), int)
    assert isinstance(evaluate("6/3"), float)
    with pytest.raises(CalculationError, match="unknown name"):
        evaluate("x+1")
    assert format_number(-0.0) == "0.0"
    assert format_number(10**20) == "100000000000000000000"


# Each of these ran for hours (holding the GIL, so no timeout or Ctrl-C could stop it) before the
# calculator bounded every operation ahead of computing it.
UNBOUNDED = [
    "round(5,-(10^9))",  # an int rounded to -10^9 digits computes 10**(10^9)
    "round(10^999, -(10^8))",
    "pow(2, 10^9)",
    "9^9^9",
    "factorial(10^9)",
    "(10^999)!",
    "-" * 900 + "1",
]


def test_unbounded_operations_give_no_result_at_once():
    # A subprocess, because a hang in C code holds the GIL and would stall the test run itself.
    code = (
        "import json, sys\n"
        "from datagen.tools import get_tool\n"
        "calc = get_tool('calculator')\n"
        "print(json.dumps([calc.run(e).to_dict() for e in json.loads(sys.argv[1])]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(UNBOUNDED)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [(r["arg"], r["ok"], r["output"]) for r in results] == [(e, False, NO_RESULT) for e in UNBOUNDED]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("round(5, -3)", "0"),
        ("round(1234, -2)", "1200"),
        ("round(2.567, 2)", "2.57"),
        ("round(2.5)", "2"),
        ("449!", str(math.factorial(449))),
        ("10^999", "1" + "0" * 999),
    ],
)
def test_within_bounds_still_computes(calc, expr, expected):
    assert calc.run(expr).output == expected


@pytest.mark.parametrize("expr", ["round(1, 2, 3)", "round(2.5, 0.5)", "round(5, 1001)", "450!", "10^1000"])
def test_past_the_bounds_gives_no_result(calc, expr):
    assert calc.run(expr).output == NO_RESULT
