"""The Seed record, its reader, normalisation, stats/dedup/sample, and the shipped starter set."""

import json
from collections import Counter
from pathlib import Path

import pytest

from datagen.errors import SeedFormatError
from datagen.record import PLUGIN_COMMANDS
from datagen.seeds.curate import dedup_seeds, format_stats, sample_balanced, seed_stats
from datagen.seeds.record import (
    CATEGORIES,
    Seed,
    category_from_filename,
    detect_seed_language,
    normalize_category,
    normalize_language,
    normalize_prompt,
    read_seeds,
    write_seeds,
)

STARTER = Path(__file__).resolve().parents[2] / "seeds" / "starter.jsonl"


def test_seed_round_trip(tmp_path):
    seeds = [
        Seed("a", "Hello there, how are you?", "en", "brainstorming"),
        Seed(
            "b",
            "计算 23*47+12",
            "zh",
            "tool",
            ["calculator"],
            source="x.jsonl",
            source_id="7",
            extra={"row": 3},
        ),
    ]
    path = tmp_path / "s.jsonl"
    assert write_seeds(path, seeds) == 2
    assert read_seeds(path) == seeds
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[1])["plugins"] == ["calculator"]


def test_expanded_prompt_rows_keep_unknown_fields_in_extra(tmp_path):
    path = tmp_path / "expanded.jsonl"
    row = {
        "id": "x-1",
        "text": "Write a haiku",
        "language": "en",
        "category": "writing",
        "plugins": [],
        "source": "expand",
        "parents": ["s-en-writing-0001"],
        "lineage": {"teacher_model": "m"},
    }
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (seed,) = read_seeds(path)
    assert seed.extra == {"parents": ["s-en-writing-0001"], "lineage": {"teacher_model": "m"}}
    assert seed.parents == ["s-en-writing-0001"] and seed.lineage == {"teacher_model": "m"}
    assert Seed.from_dict(seed.to_dict()) == seed


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('{"text": "hi there"}', "id", "missing required field"),
        ('{"id": "a"}', "text", "missing required field"),
        ('{"id": "a", "text": 5}', "text", "must be a string"),
        ('{"id": "a", "text": "   "}', "text", "is empty"),
        ('{"id": "", "text": "hello"}', "id", "non-empty"),
        ('{"id": "a", "text": "hello", "plugins": "search"}', "plugins", "list of plugin names"),
        ('{"id": "a", "text": "hello", "plugins": ["web"]}', "plugins", "unknown plugin 'web'"),
        ('{"id": "a", "text": "hello", "language": 1}', "language", "string or null"),
        ('["a", "b"]', None, "JSON object"),
        ("{not json", None, "invalid JSON"),
    ],
)
def test_read_seeds_errors_name_file_line_field(tmp_path, line, field, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "text": "fine prompt"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(SeedFormatError) as err:
        read_seeds(path)
    assert err.value.path == str(path) and err.value.line == 3
    assert err.value.field == field
    assert message in str(err.value)


def test_read_seeds_duplicate_id_and_missing_file(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "a", "text": "one"}\n{"id": "a", "text": "two"}\n', encoding="utf-8")
    with pytest.raises(SeedFormatError, match="duplicate id 'a' \\(first used on line 1\\)") as err:
        read_seeds(path)
    assert err.value.line == 2 and err.value.field == "id"
    with pytest.raises(SeedFormatError, match="not found"):
        read_seeds(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  hello   world \t again  ", "hello world again"),
        ("你好，世界！", "你好，世界！"),  # full-width punctuation kept (NFC, not NFKC)
        ("e\u0301te\u0301", "\u00e9t\u00e9"),  # NFC composes
        ("zero\u200bwidth\ufeff and\x07bell", "zerowidth andbell"),
        ("a\r\nb\u00a0c\u3000d", "a\nb c d"),
        ("para one\n\n\n\n\npara two", "para one\n\npara two"),
        (
            "Fix this:\n```python\ndef f(x):\n    return  x   +  1   \n```\nthanks  !",
            "Fix this:\n```python\ndef f(x):\n    return  x   +  1\n```\nthanks !",
        ),
        (
            "Explain:\n    for i in range(3):\n        print(i)",
            "Explain:\n    for i in range(3):\n        print(i)",
        ),
    ],
)
def test_normalize_prompt(raw, expected):
    assert normalize_prompt(raw) == expected


def test_language_and_category_helpers():
    assert detect_seed_language("你好") == "zh"  # too short for the detector: script fallback
    assert detect_seed_language("How do I make friends in a new city?") == "en"
    assert detect_seed_language("123 + 456") is None


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("writing_zh", "writing"),
        ("code_en", "code"),
        ("helpful_code_prompts", "code"),
        ("honest_conversations", "honest"),
        ("Role  Playing", "role_play"),
        ("helpful_role_playing", "role_play"),
        ("rp", "role_play"),
        ("advice", "brainstorming"),
        ("harmless_zh", "harmless"),
        ("Code", "code"),
        ("open_qa", "open_qa"),
        (None, "default"),
        ("  ", "default"),
    ],
)
def test_one_category_normaliser_for_seeds_config_and_guidance(raw, norm, tmp_path):
    from datagen.generate import config

    assert normalize_category(raw) == norm
    assert config.normalize_category is normalize_category  # the config lookups use the same one
    assert config.lookup({"default": "fallback", norm: "found"}, raw) == "found"
    if raw and raw.strip():  # an imported seed stores the normalised name
        src = tmp_path / "rows.jsonl"
        src.write_text(json.dumps({"p": "Write a short poem about the sea at night.", "c": raw}) + "\n")
        from datagen.seeds.importer import import_seeds

        [seed] = import_seeds(src, field="p", category_field="c").seeds
        assert seed.category == norm


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("你好", "zh"),
        ("写诗", "zh"),
        ("東京", "zh"),  # Han alone: zh
        ("こんにちは", "ja"),
        ("カタカナ", "ja"),  # kana: ja
        ("안녕", "ko"),  # Hangul: ko
        ("你好 world", "zh"),
        ("Hola amigo", None),
        ("Hello there", None),
        ("Café olé", None),  # short Latin: no guess
        ("What is 爱?", None),  # mostly Latin, too short to tell
        ("Hola amigo, ¿cómo estás hoy? Cuéntame algo de tu día.", "es"),  # long enough: the detector names it
    ],
)
def test_short_prompts_get_a_language_from_cjk_script_only(text, language):
    from datagen.text.language import detect_language

    assert detect_seed_language(text) == language
    if detect_language(text) is not None:  # the one detector decides whenever it can
        assert detect_seed_language(text) == detect_language(text)
    assert normalize_language("zh-CN") == "zh" and normalize_language("English") == "en"
    assert normalize_language("fr_FR") == "fr"
    assert (
        normalize_category("Role Playing") == "role_play" and normalize_category("advice") == "brainstorming"
    )
    assert category_from_filename("x/helpful_code_prompts.jsonl") == "code"
    assert category_from_filename("harmless_prompts.jsonl") == "harmless"
    assert category_from_filename("helpful_role_playing_prompts.jsonl") == "role_play"
    assert category_from_filename("alpaca_data.json") is None


def _seeds() -> list[Seed]:
    out = []
    for cat in ("code", "writing"):
        for lang in ("en", "zh"):
            for i in range(5):
                out.append(Seed(f"{cat}-{lang}-{i}", f"{cat} {lang} prompt number {i}", lang, cat))
    out += [Seed(f"calc-{i}", f"what is {i}*7", "en", "tool", ["calculator"]) for i in range(4)]
    out += [Seed(f"srch-{i}", f"who is person {i}", "en", "tool", ["search"]) for i in range(4)]
    return out


def test_sample_balanced_is_balanced_and_deterministic():
    seeds = _seeds()
    a = sample_balanced(seeds, per_cell=2, seed=1)
    cells = Counter(s.cell for s in a)
    assert len(cells) == 6 and set(cells.values()) == {2}  # tool cells split by plugin
    assert a == sample_balanced(list(reversed(seeds)), per_cell=2, seed=1)[::-1]  # order-independent choice
    assert [s.id for s in a] == [s.id for s in seeds if s in a]  # keeps input order
    picks = {tuple(s.id for s in sample_balanced(seeds, per_cell=2, seed=k)) for k in range(6)}
    assert len(picks) > 1  # the seed matters
    assert len(sample_balanced(seeds, per_cell=100, seed=0)) == len(seeds)
    with pytest.raises(ValueError):
        sample_balanced(seeds, per_cell=0)


def test_dedup_exact_and_near():
    seeds = [
        Seed("a", "How do I learn to swim as an adult who is afraid of deep water?", "en", "brainstorming"),
        Seed("b", "how do I learn to swim, as an adult who is afraid of deep water", "en", "brainstorming"),
        Seed(
            "c", "How do I learn to swim as an adult who is very afraid of deep water?", "en", "brainstorming"
        ),
        Seed("d", "Write a poem about the sea.", "en", "writing"),
    ]
    exact = dedup_seeds(seeds)
    assert [s.id for s in exact.kept] == ["a", "c", "d"]
    assert [(s.id, kind, of) for s, kind, of in exact.dropped] == [("b", "exact", "a")]
    near = dedup_seeds(seeds, near=True, threshold=0.5)
    assert [s.id for s in near.kept] == ["a", "d"]
    assert ("c", "near", "a") in [(s.id, kind, of) for s, kind, of in near.dropped]


def test_stats_counts_and_table():
    stats = seed_stats(_seeds())
    assert stats["total"] == 28
    assert stats["cells"]["code|en|-"] == 5 and stats["cells"]["tool|en|calculator"] == 4
    assert stats["plugins"] == {"calculator": 4, "search": 4}
    assert stats["length"]["min"] <= stats["length"]["median"] <= stats["length"]["max"]
    table = format_stats(stats)
    assert "tool [calculator]" in table and table.splitlines()[0].split() == ["category", "en", "zh", "total"]


def test_starter_set_meets_the_brief():
    seeds = read_seeds(STARTER)  # also checks ids are unique and every row is valid
    assert len(seeds) >= 300
    langs = Counter(s.language for s in seeds)
    assert set(langs) == {"zh", "en"}
    assert 0.4 <= langs["zh"] / len(seeds) <= 0.6
    cats = Counter(s.category for s in seeds)
    assert set(cats) == set(CATEGORIES)  # every category present, no unknown ones
    for cat in CATEGORIES:
        per_lang = Counter(s.language for s in seeds if s.category == cat)
        assert per_lang["en"] >= 8 and per_lang["zh"] >= 7, cat  # English plentiful everywhere
    plugins = Counter(p for s in seeds for p in s.plugins)
    assert set(plugins) == set(PLUGIN_COMMANDS)
    assert all(n >= 30 for n in plugins.values()), plugins
    assert all((s.category == "tool") == bool(s.plugins) for s in seeds)
    assert all(s.text == normalize_prompt(s.text) for s in seeds)
    assert len({normalize_prompt(s.text).lower() for s in seeds}) == len(seeds)
    assert all(s.id.startswith(f"s-{s.language}-") for s in seeds)


def test_starter_search_prompts_are_answerable_offline():
    from datagen.tools.search import SearchTool

    tool = SearchTool()
    search = [s for s in read_seeds(STARTER) if "search" in s.plugins]
    answered = [s for s in search if tool.run(s.text).ok]
    assert len(answered) / len(search) >= 0.9
