"""`import_seeds` over the dataset shapes users bring, and the `datagen seeds` commands."""

import csv
import json
import os
import re

import pytest

from datagen.cli import main
from datagen.errors import SeedFormatError
from datagen.seeds.importer import import_seeds
from datagen.seeds.record import read_seeds
from datagen.seeds.sources import get_field, parse_path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_self_instruct_seed_tasks(tmp_path):
    src = _jsonl(
        tmp_path / "seed_tasks.jsonl",
        [
            {
                "id": "seed_task_0",
                "name": "breakfast_suggestion",
                "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
                "instances": [{"input": "", "output": "Yes, oatmeal."}],
                "is_classification": False,
            },
            {
                "id": "seed_task_1",
                "name": "antonym_relation",
                "instruction": "What is the relation between the given pairs?",
                "instances": [{"input": "Night : Day :: Right : Left", "output": "antonyms"}],
                "is_classification": False,
            },
            {
                "id": "seed_task_2",
                "name": "no_instances",
                "instruction": "Tell me a   joke.",
                "instances": [],
            },
        ],
    )
    result = import_seeds(src, preset="self-instruct", category="brainstorming")
    texts = [s.text for s in result.seeds]
    assert texts == [
        "Is there anything I can eat for a breakfast that doesn't include eggs?",
        "What is the relation between the given pairs?\n\nNight : Day :: Right : Left",
        "Tell me a joke.",
    ]
    first = result.seeds[0]
    assert first.source_id == "seed_task_0" and first.source == "seed_tasks.jsonl"  # the name, not the path
    assert first.language == "en" and first.category == "brainstorming" and first.plugins == []
    assert first.id.startswith("seed-tasks-") and len({s.id for s in result.seeds}) == 3
    # ids depend on the text only: stable across reruns
    assert [s.id for s in import_seeds(src, preset="self-instruct").seeds] == [s.id for s in result.seeds]


def test_alpaca_json_list(tmp_path):
    src = tmp_path / "alpaca_data.json"
    src.write_text(
        json.dumps(
            [
                {"instruction": "Give three tips for staying healthy.", "input": "", "output": "..."},
                {
                    "instruction": "Translate the sentence into Chinese.",
                    "input": "I like green tea.",
                    "output": "...",
                },
                {"instruction": "", "input": "", "output": "orphan"},
            ],
            indent=2,
        ),
        encoding="utf-8",
    )
    result = import_seeds(src, field="instruction", append_fields=["input"], category="writing")
    assert [s.text for s in result.seeds] == [
        "Give three tips for staying healthy.",
        "Translate the sentence into Chinese.\n\nI like green tea.",
    ]
    assert [(r.row, r.reason) for r in result.rejects] == [(3, "empty")]


def test_json_object_holding_a_list(tmp_path):
    src = tmp_path / "wrapped.json"
    src.write_text(json.dumps({"version": 2, "data": [{"q": "What is BM25?"}]}), encoding="utf-8")
    assert [s.text for s in import_seeds(src, field="q").seeds] == ["What is BM25?"]
    src.write_text(json.dumps({"a": [{"q": "x one"}], "b": [{"q": "y two"}]}), encoding="utf-8")
    with pytest.raises(SeedFormatError, match="--records-path"):
        import_seeds(src, field="q")
    assert [s.text for s in import_seeds(src, field="q", records_path="b").seeds] == ["y two"]


def test_moss_user_prompt_files(tmp_path, shared_dir):
    own = _jsonl(
        tmp_path / "helpful_writing_prompts.jsonl",
        [{"user_prompt": "写一首关于秋天的诗"}, {"user_prompt": "Write a story about a brave cat."}],
    )
    result = import_seeds(own, preset="moss")
    assert [(s.language, s.category) for s in result.seeds] == [("zh", "writing"), ("en", "writing")]

    prompts = sorted((shared_dir / "moss-prompts").rglob("*.jsonl"))
    assert prompts
    for path in prompts:
        res = import_seeds(path, field="user_prompt")
        n_lines = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        assert res.counts["read"] == n_lines
        assert len(res.seeds) + len(res.rejects) == n_lines
        assert {s.language for s in res.seeds} <= {"zh", "en"}
        assert all(s.category is not None for s in res.seeds), path.name  # from the MOSS file name
    harmless = import_seeds(shared_dir / "moss-prompts" / "harmless_prompts.jsonl", field="user_prompt")
    assert {s.category for s in harmless.seeds} == {"harmless"}


def test_sharegpt_first_human_turn(tmp_path):
    src = tmp_path / "sharegpt.json"
    src.write_text(
        json.dumps(
            [
                {
                    "id": "sg1",
                    "conversations": [
                        {"from": "system", "value": "You are helpful."},
                        {"from": "human", "value": "How do rainbows form?"},
                        {"from": "gpt", "value": "Light refracts..."},
                        {"from": "human", "value": "And double rainbows?"},
                    ],
                },
                {"id": "sg2", "conversations": [{"from": "user", "value": "  用 Rust 写一个 hello world  "}]},
                {"id": "sg3", "conversations": [{"from": "gpt", "value": "I start."}]},
                {"id": "sg1", "conversations": [{"from": "human", "value": "A different text, same id"}]},
            ]
        ),
        encoding="utf-8",
    )
    result = import_seeds(src, preset="sharegpt")
    assert [(s.source_id, s.text, s.language) for s in result.seeds] == [
        ("sg1", "How do rainbows form?", "en"),
        ("sg2", "用 Rust 写一个 hello world", "zh"),
    ]
    assert [(r.row, r.reason, r.source_id) for r in result.rejects] == [
        (3, "missing_field", "sg3"),
        (4, "duplicate_id", "sg1"),
    ]
    # the same with an explicit index path
    by_index = import_seeds(src, field="conversations.1.value")
    assert by_index.seeds[0].text == "How do rainbows form?"


def test_csv_with_field_mapping(tmp_path):
    src = tmp_path / "prompts.csv"
    with open(src, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uid", "prompt", "lang", "kind", "tools"])
        w.writerow(["1", "What is 17% of 2,300?", "en-US", "Tools", "calculator"])
        w.writerow(["2", "北京到上海的高铁有多长？", "Chinese", "", "search, calculator"])
        w.writerow(["3", "multi\nline   prompt", "en", "writing", ""])
        w.writerow(["4", "Draw me a cat", "en", "tool", "paint"])
        w.writerow(["5", "x", "en", "writing", ""])
    result = import_seeds(
        src, field="prompt", lang_field="lang", category_field="kind", id_field="uid", plugins_field="tools"
    )
    got = [(s.source_id, s.text, s.language, s.category, s.plugins) for s in result.seeds]
    assert got == [
        ("1", "What is 17% of 2,300?", "en", "tool", ["calculator"]),
        ("2", "北京到上海的高铁有多长？", "zh", "tool", ["search", "calculator"]),
        ("3", "multi\nline prompt", "en", "writing", []),
    ]
    # row numbers are CSV lines: the quoted multi-line field of row 3 spans two
    assert [(r.row, r.reason) for r in result.rejects] == [(6, "bad_plugins"), (7, "too_short")]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "p.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"meta": {"question": "Why is the sea salty?"}, "n": 1},
                {"meta": {"question": None}, "n": 2},
                {"meta": {"question": "为什么海水是咸的？"}, "n": 3},
            ]
        ),
        src,
    )
    result = import_seeds(src, field="meta.question", id_field="n", plugins=["search"])
    assert [(s.text, s.source_id, s.category, s.plugins) for s in result.seeds] == [
        ("Why is the sea salty?", "1", "tool", ["search"]),
        ("为什么海水是咸的？", "3", "tool", ["search"]),
    ]
    assert [(r.row, r.reason) for r in result.rejects] == [(2, "missing_field")]


def test_datasets_folder(tmp_path):
    import datasets

    folder = tmp_path / "ds"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [
                    {"instruction": "Name three primary colours.", "lang": "en"},
                    {"instruction": "列举三种原色。", "lang": "zh"},
                ]
            ),
            "test": datasets.Dataset.from_list([{"instruction": "Held out.", "lang": "en"}]),
        }
    ).save_to_disk(str(folder))
    with pytest.raises(SeedFormatError, match="--split"):
        import_seeds(folder, field="instruction")
    result = import_seeds(
        folder, field="instruction", lang_field="lang", split="train", category="brainstorming"
    )
    assert [(s.text, s.language) for s in result.seeds] == [
        ("Name three primary colours.", "en"),
        ("列举三种原色。", "zh"),
    ]
    single = tmp_path / "single"
    datasets.Dataset.from_list([{"instruction": "Only split."}]).save_to_disk(str(single))
    assert [s.text for s in import_seeds(single, field="instruction").seeds] == ["Only split."]


def test_bad_rows_are_rejected_with_reasons_never_fatal(tmp_path):
    src = tmp_path / "messy.jsonl"
    src.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "Tell me a joke about cats."}),
                "{broken json",
                json.dumps(["not", "an", "object"]),
                json.dumps({"other": "no prompt field"}),
                json.dumps({"prompt": 42}),
                json.dumps({"prompt": " \u200b  "}),
                json.dumps({"prompt": "y" * 50}),
                json.dumps({"prompt": "Tell me   a joke about cats."}),
                json.dumps({"prompt": "Bonjour, comment allez-vous aujourd'hui ?"}),
                json.dumps({"prompt": "Another good one, in English."}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = import_seeds(src, field="prompt", max_chars=45, languages=["en", "zh"])
    assert [s.text for s in result.seeds] == ["Tell me a joke about cats.", "Another good one, in English."]
    assert [(r.row, r.reason) for r in result.rejects] == [
        (2, "invalid_json"),
        (3, "not_an_object"),
        (4, "missing_field"),
        (5, "not_text"),
        (6, "empty"),
        (7, "too_long"),
        (8, "duplicate_text"),
        (9, "language_not_selected"),
    ]
    assert result.counts["read"] == 10 and result.counts["kept"] == 2
    assert "rejected: duplicate_text 1" in result.summary()


def test_source_is_the_file_name_only_down_to_the_published_lineage(tmp_path, fake_openai, capsys):
    from datagen.generate.dialogues import generate_dialogues
    from datagen.io import iter_conversations
    from tests.fakes.openai_fixtures import make_teacher_config_for
    from tests.generate.scripted_teacher import scripted_teacher

    folder = tmp_path / "home" / "someone" / "private"
    folder.mkdir(parents=True)
    src = _jsonl(
        folder / "alpaca_data.jsonl",
        [{"instruction": "Explain how tides work."}, {"instruction": "Name three uses of copper."}],
    )
    out = tmp_path / "seeds.jsonl"
    assert (
        main(
            [
                "seeds",
                "import",
                str(src),
                "--field",
                "instruction",
                "--id-field",
                "instruction",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    seeds = read_seeds(out)
    assert {s.source for s in seeds} == {"alpaca_data.jsonl"}
    assert str(tmp_path) not in out.read_text()
    # importing the same file again with --append still recognises what came from it
    assert (
        main(
            [
                "seeds",
                "import",
                str(src),
                "--field",
                "instruction",
                "--id-field",
                "instruction",
                "--out",
                str(out),
                "--append",
            ]
        )
        == 0
    )
    assert "duplicate_id 2" in capsys.readouterr().err and len(read_seeds(out)) == 2
    fake_openai.set_responder(scripted_teacher)
    dialogues = tmp_path / "hhh.jsonl"
    generate_dialogues(
        seeds, "hhh", {"turns": 1}, make_teacher_config_for(fake_openai), dialogues, tmp_path / "j.sqlite"
    )
    assert {c.lineage.source for c in iter_conversations(dialogues)} == {"alpaca_data.jsonl"}
    assert str(folder) not in dialogues.read_text()


def test_append_tells_apart_files_with_the_same_name(tmp_path, capsys):
    # v1/train.jsonl and v2/train.jsonl: the same name, ids 1 and 2 in each, other prompts
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1 = _jsonl(
        tmp_path / "v1" / "train.jsonl",
        [{"id": 1, "q": "Explain how tides work."}, {"id": 2, "q": "Name three uses of copper."}],
    )
    v2 = _jsonl(
        tmp_path / "v2" / "train.jsonl",
        [{"id": 1, "q": "What is a closure in JavaScript?"}, {"id": 2, "q": "Summarise the water cycle."}],
    )
    out = tmp_path / "seeds.jsonl"
    args = ["--field", "q", "--id-field", "id", "--out", str(out)]
    assert main(["seeds", "import", str(v1), *args]) == 0
    assert main(["seeds", "import", str(v2), *args, "--append"]) == 0
    err = capsys.readouterr().err
    assert "duplicate_id" not in err
    seeds = read_seeds(out)
    assert len(seeds) == 4 and {s.source for s in seeds} == {"train.jsonl"}
    # the file's identity is a hash of its full path, never the path itself
    hashes = {s.extra["source_hash"] for s in seeds}
    assert len(hashes) == 2 and all(re.fullmatch(r"[0-9a-f]{12}", h) for h in hashes)
    assert str(tmp_path) not in out.read_text(encoding="utf-8")
    # the same file again is still recognised, through a relative path too
    assert main(["seeds", "import", os.path.relpath(v1), *args, "--append"]) == 0
    assert "duplicate_id 2" in capsys.readouterr().err and len(read_seeds(out)) == 4


def test_append_after_an_import_without_source_hash_matches_by_name(tmp_path, capsys):
    src = _jsonl(tmp_path / "train.jsonl", [{"id": 1, "q": "Explain how tides work."}])
    out = tmp_path / "seeds.jsonl"
    old = {"id": "train-0", "text": "Explain how tides work.", "source": "train.jsonl", "source_id": "1"}
    out.write_text(json.dumps(old) + "\n", encoding="utf-8")  # an import made before source_hash
    assert (
        main(["seeds", "import", str(src), "--field", "q", "--id-field", "id", "--out", str(out), "--append"])
        == 0
    )
    assert "duplicate_id 1" in capsys.readouterr().err and len(read_seeds(out)) == 1


def test_short_latin_prompts_are_not_guessed_english(tmp_path):
    src = _jsonl(
        tmp_path / "short.jsonl",
        [{"p": "Hola amigo"}, {"p": "你好"}, {"p": "안녕"}, {"p": "How do I make friends in a new city?"}],
    )
    kept = import_seeds(src, field="p")
    assert [(s.text, s.language) for s in kept.seeds] == [
        ("Hola amigo", None),
        ("你好", "zh"),
        ("안녕", "ko"),
        ("How do I make friends in a new city?", "en"),
    ]
    assert kept.counts["lang_unknown"] == 1
    # selecting languages: a prompt whose language cannot be told is rejected, not let through as en
    only_en = import_seeds(src, field="p", languages=["en"])
    assert [s.text for s in only_en.seeds] == ["How do I make friends in a new city?"]
    assert [(r.text, r.reason) for r in only_en.rejects] == [
        ("Hola amigo", "language_unknown"),
        ("你好", "language_not_selected"),
        ("안녕", "language_not_selected"),
    ]
    # a constant language still applies to every row
    es = import_seeds(src, field="p", language="es", languages=["es"])
    assert [s.language for s in es.seeds] == ["es"] * 4


def test_cli_sample_selects_categories_by_their_normalised_name(tmp_path, capsys):
    seeds = _jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"id": "a", "text": "Write a poem about rain.", "language": "en", "category": "writing"},
            {"id": "b", "text": "写一首关于雨的诗。", "language": "zh", "category": "Writing"},
            {"id": "c", "text": "Write a Python function.", "language": "en", "category": "code"},
        ],
    )
    out = tmp_path / "sample.jsonl"
    assert (
        main(
            [
                "seeds",
                "sample",
                str(seeds),
                "--per-cell",
                "5",
                "--categories",
                "writing_zh",
                "--languages",
                "zh-CN,English",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(s.id for s in read_seeds(out)) == ["a", "b"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "--field"),
        ({"field": "a[", "preset": None}, "bad field path"),
        ({"field": "a", "plugins": ["web"]}, "unknown plugin"),
        ({"preset": "nope"}, "unknown preset"),
    ],
)
def test_option_errors(tmp_path, kwargs, message):
    src = _jsonl(tmp_path / "x.jsonl", [{"a": "hello"}])
    with pytest.raises(SeedFormatError, match=message):
        import_seeds(src, **kwargs)


def test_source_errors(tmp_path):
    with pytest.raises(SeedFormatError, match="not found"):
        import_seeds(tmp_path / "missing.jsonl", field="a")
    (tmp_path / "x.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(SeedFormatError, match="unknown source format"):
        import_seeds(tmp_path / "x.txt", field="a")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(SeedFormatError, match="datasets"):
        import_seeds(tmp_path / "plain_dir", field="a")


def test_field_paths():
    row = {"a": {"b": [{"k": "x", "v": 1}, {"k": "y", "v": 2}]}, "0": "zero"}
    assert get_field(row, "a.b.1.v") == 2
    assert get_field(row, "a.b[1].v") == 2
    assert get_field(row, "a.b[-1].v") == 2
    assert get_field(row, "a.b[k=y|z].v") == 2
    assert get_field(row, "0") == "zero"
    assert parse_path("conversations[from=human|user].value") == [
        "conversations",
        ("from", ("human", "user")),
        "value",
    ]
    from datagen.seeds.sources import MISSING

    assert get_field(row, "a.b.5.v") is MISSING and get_field(row, "a.c") is MISSING


def test_cli_import_stats_dedup_sample(tmp_path, capsys):
    src = _jsonl(
        tmp_path / "helpful_code_prompts.jsonl",
        [
            {"user_prompt": "Write a Python function to merge two sorted lists."},
            {"user_prompt": "用Python实现二分查找"},
            {"user_prompt": ""},
            {"user_prompt": "Explain recursion with an example in JavaScript."},
        ],
    )
    out, rejects = tmp_path / "seeds.jsonl", tmp_path / "rejects.jsonl"
    assert (
        main(["seeds", "import", str(src), "--preset", "moss", "--out", str(out), "--rejects", str(rejects)])
        == 0
    )
    err = capsys.readouterr().err
    assert "read 4 rows: kept 3, rejected 1" in err and "empty 1" in err
    assert [json.loads(x)["reason"] for x in rejects.read_text(encoding="utf-8").splitlines()] == ["empty"]
    assert len(read_seeds(out)) == 3

    # --append keeps what is there and adds only new prompts
    more = _jsonl(
        tmp_path / "more.jsonl",
        [{"q": "Write a Python function to merge two sorted lists."}, {"q": "What is a closure?"}],
    )
    assert (
        main(
            [
                "seeds",
                "import",
                str(more),
                "--field",
                "q",
                "--category",
                "code",
                "--out",
                str(out),
                "--append",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert len(read_seeds(out)) == 5

    assert main(["seeds", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 5 and stats["categories"] == {"code": 5}

    deduped = tmp_path / "dedup.jsonl"
    dropped = tmp_path / "dropped.jsonl"
    assert main(["seeds", "dedup", str(out), "--out", str(deduped), "--rejects", str(dropped)]) == 0
    assert "dropped 1 exact" in capsys.readouterr().err
    assert len(read_seeds(deduped)) == 4
    assert json.loads(dropped.read_text(encoding="utf-8"))["reason"] == "exact_duplicate"

    sample = tmp_path / "sample.jsonl"
    assert (
        main(["seeds", "sample", str(deduped), "--per-cell", "1", "--seed", "3", "--out", str(sample)]) == 0
    )
    assert {s.language for s in read_seeds(sample)} == {"en", "zh"} and len(read_seeds(sample)) == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n', encoding="utf-8")
    assert main(["seeds", "stats", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"Error: {bad}:1: text: missing required field"
    assert main(["seeds", "import", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "--field" in capsys.readouterr().err
