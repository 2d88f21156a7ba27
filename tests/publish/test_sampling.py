"""The card says which sampling parameters the teacher was actually sent, per prompt template (from
the run's journal), not the `teacher.params` that every stage overrides."""

from __future__ import annotations

from datagen.publish.build import JOURNAL_FILE, build_dataset_folder, journal_sampling
from datagen.publish.card import SentSampling, split_card
from datagen.teacher.journal import Journal, JournalEntry, key_of
from tests.publish.runs import make_run_dir

EXPAND = {"max_tokens": 2048, "temperature": 1.0, "top_p": 1.0}
ASSISTANT = {"max_tokens": 1024, "temperature": 0.7, "top_p": 1.0}
USER = {"max_tokens": 256, "temperature": 0.9, "top_p": 1.0}


def write_journal(path, calls: list[tuple[str, str, dict, str]]) -> None:
    """One journal row per (template version, model, params, status), with the real Journal."""
    with Journal(path) as j:
        for i, (template, model, params, status) in enumerate(calls):
            request = {
                "model": model,
                "messages": [{"role": "user", "content": f"prompt {i}"}],
                "params": params,
                "template_version": template,
            }
            j.put(
                JournalEntry(
                    key=key_of(request),
                    status=status,
                    request=request,
                    model=model,
                    response="ok" if status == "ok" else None,
                )
            )
        j.flush()


def test_journal_sampling_groups_answered_calls(tmp_path):
    path = tmp_path / JOURNAL_FILE
    write_journal(
        path,
        [("expand.v3", "teacher-7b-chat", EXPAND, "ok")] * 2
        + [("hhh_assistant.v2", "/srv/models/teacher-7b-chat", ASSISTANT, "ok")] * 3
        + [("hhh_assistant.v2", "/srv/models/teacher-7b-chat", ASSISTANT, "failed")]
        + [("hhh_user.v1", "/srv/models/teacher-7b-chat", USER, "ok")] * 2
        + [("hhh_user.v1", "/srv/models/teacher-7b-chat", {**USER, "temperature": 0.5}, "ok")],
    )
    assert journal_sampling(path) == [
        SentSampling("expand.v3", "teacher-7b-chat", EXPAND, 2),
        SentSampling("hhh_assistant.v2", "teacher-7b-chat", ASSISTANT, 3),  # the failed call is not counted
        SentSampling("hhh_user.v1", "teacher-7b-chat", USER, 2),
        SentSampling("hhh_user.v1", "teacher-7b-chat", {**USER, "temperature": 0.5}, 1),
    ]
    assert journal_sampling(tmp_path / "missing.sqlite") is None


def test_structured_output_schemas_are_one_row_per_kind(tmp_path):
    """The judge sends a schema that differs with every set of graded turns: the card counts them
    under one short name per kind of request, not one row per schema."""
    judge = {"max_tokens": 700, "temperature": 0.0}

    def schema(turns):
        return {"type": "object", "properties": {"turns": {"enum": turns}}}

    path = tmp_path / JOURNAL_FILE
    write_journal(
        path,
        [
            (
                "judge.hhh.v1",
                "m",
                {
                    **judge,
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "hhh_v1", "schema": schema(t)},
                    },
                },
                "ok",
            )
            for t in ([1], [1, 2], [1, 2, 3])
        ]
        + [
            (
                "judge.grounded.v1",
                "m",
                {**judge, "response_format": {"type": "json_object", "schema": schema(t)}},
                "ok",
            )
            for t in ([1], [2])
        ]
        + [("judge.grounded.v1", "m", {**judge, "response_format": {"type": "json_object"}}, "ok")],
    )
    assert journal_sampling(path) == [
        SentSampling("judge.grounded.v1", "m", {**judge, "response_format": "json_object+schema"}, 2),
        SentSampling("judge.grounded.v1", "m", {**judge, "response_format": "json_object"}, 1),
        SentSampling("judge.hhh.v1", "m", {**judge, "response_format": "json_schema:hhh_v1"}, 3),
    ]


def test_card_lists_what_each_template_was_sent(tmp_path):
    # the run config's teacher.params say temperature 0.7 / top_p 0.8; the stages sent their own
    run = make_run_dir(tmp_path / "run")
    write_journal(
        run / JOURNAL_FILE,
        [
            ("expand.v3", "teacher-7b-chat", EXPAND, "ok"),
            ("hhh_assistant.v2", "teacher-7b-chat", ASSISTANT, "ok"),
            ("hhh_user.v1", "teacher-7b-chat", USER, "ok"),
        ],
    )
    folder = build_dataset_folder(run, tmp_path / "ds")
    _, body = split_card(folder.card_path.read_text(encoding="utf-8"))
    sampling = body.split("### Sampling")[1].split("\n## ")[0].split("### ")[0]
    rows = [line for line in sampling.splitlines() if line.startswith("| `")]
    assert rows[:3] == [
        '| `expand.v3` | `teacher-7b-chat` | `{"max_tokens": 2048, "temperature": 1.0, "top_p": 1.0}` | 1 |',
        '| `hhh_assistant.v2` | `teacher-7b-chat` | `{"max_tokens": 1024, "temperature": 0.7, "top_p": 1.0}` | 1 |',
        '| `hhh_user.v1` | `teacher-7b-chat` | `{"max_tokens": 256, "temperature": 0.9, "top_p": 1.0}` | 1 |',
    ]
    # teacher.params is shown only for what it is
    assert "Sampling settings (run config)" not in body
    assert "a stage's own `temperature`, `top_p` and `max_tokens` win over these" in sampling


def test_card_without_a_journal_says_so(tmp_path):
    folder = build_dataset_folder(make_run_dir(tmp_path / "run"), tmp_path / "ds")
    _, body = split_card(folder.card_path.read_text(encoding="utf-8"))
    sampling = body.split("### Sampling")[1].split("\n## ")[0]
    assert "journal was not available" in sampling
    assert '| `{"temperature": 0.7, "top_p": 0.8}` | 10 |' in sampling  # the rows' lineage.params
