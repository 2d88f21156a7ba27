"""The top-level `datagen` command."""

import pytest

from datagen.cli import build_parser, main


def test_env_command_prints_versions(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("python ") and "datagen" in out and "torch" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["validate"])
    assert exc.value.code == 2


def test_known_errors_are_one_line_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["run", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"Error: {missing}: config file not found\n"


# One `Error:` line, never a traceback, for every bad config (issue 11). Each case fails before
# its fix: a traceback (folder, threshold), a silent run (negative count, name, duplicate key, alias
# bomb), or an error only when the plugin stage calls the tool.
CONFIG_ERRORS = {
    "folder": (None, "{cfg}: is a folder; give the YAML config file inside it"),
    "duplicate key": ("name: a\nseed: 1\nname: b\n", "{cfg}:3: name: duplicate key (first given on line 1)"),
    "nested duplicate": (
        "dialogues:\n  hhh:\n    enabled: true\n    enabled: false\n",
        "{cfg}:4: dialogues.hhh.enabled: duplicate key (first given on line 3)",
    ),
    "negative count": (
        "dialogues:\n  hhh:\n    max_dialogues: -1\n",
        "{cfg}:3: dialogues.hhh.max_dialogues: must be at least 0, got -1",
    ),
    "path as name": (
        "name: ../../x\n",
        "{cfg}:1: name: must be a plain name of letters, digits, '.', '_' and '-' (it names the "
        "folder outputs/NAME), got '../../x'",
    ),
    "absolute name": (
        "name: /tmp/x\n",
        "{cfg}:1: name: must be a plain name of letters, digits, '.', '_' and '-' (it names the "
        "folder outputs/NAME), got '/tmp/x'",
    ),
    "filter threshold": (
        "filters:\n  steps:\n    near_dedup: {threshold: high}\n",
        "{cfg}:3: filters.steps.near_dedup.threshold: step 'near_dedup': must be a number or "
        "null, got 'high' (str)",
    ),
    "tool setting": (
        "seed: 1\ntools:\n  calculator: {max_digits: x}\n",
        "{cfg}:3: tools.calculator.max_digits: must be an integer, got 'x' (str)",
    ),
    "check batch": ("check:\n  batch_size: 0\n", "{cfg}:2: check.batch_size: must be at least 1, got 0"),
    "recursive alias": (
        "dialogues:\n  hhh:\n    options: &o {turns: *o}\n",
        "{cfg}:3: dialogues.hhh.options.turns: a YAML alias refers to a value that contains it",
    ),
}


def _alias_bomb() -> str:
    """Nine levels of nine aliases: under 400 bytes that load as 9**9 strings."""
    text = "seeds:\n  categories:\n    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"    - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_bad_configs_give_one_error_line(tmp_path, capsys, case):
    text, expected = CONFIG_ERRORS[case]
    cfg = tmp_path / "run.yaml"
    if text is None:
        cfg.mkdir()
    else:
        cfg.write_text(text, encoding="utf-8")
    assert main(["run", str(cfg)]) == 1
    assert capsys.readouterr().err == "Error: " + expected.format(cfg=cfg) + "\n"


def test_unknown_tool_is_refused_when_the_config_loads(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("tools:\n  search: {}\n  weather: {}\n", encoding="utf-8")
    assert main(["run", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {cfg}:3: tools.weather: unknown tool 'weather' (known: ")
    assert err.count("\n") == 1


def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(_alias_bomb(), encoding="utf-8")
    assert len(cfg.read_bytes()) < 700
    assert main(["run", str(cfg)]) == 1
    assert capsys.readouterr().err == (
        f"Error: {cfg}:7: seeds.categories.4.0: YAML aliases expand to more than 10000 values beyond those "
        "written; write the values out instead of nesting aliases\n"
    )


def test_a_folder_given_as_an_output_file_is_one_error_line(tmp_path, capsys, monkeypatch):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "Name three rivers."}\n', encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    args = ["seeds", "import", str(src), "--field", "prompt", "--out", str(out)]
    assert main(args) == 1
    assert capsys.readouterr().err == f"Error: {out}: Is a directory\n"
    monkeypatch.setenv("DATAGEN_DEBUG", "1")
    with pytest.raises(IsADirectoryError):
        main(args)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "x.jsonl", "--kind", "hhh", "--out", "y.jsonl", "--mode", "batch"],  # was --model batch
        ["run", "c.yaml", "--ou", "x"],  # a prefix of --out
        ["seeds", "import", "x.jsonl", "--ou", "y.jsonl"],  # a prefix in a nested command
    ],
)
def test_a_prefix_of_a_flag_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "required: --out" in err


def test_an_error_line_never_shows_a_remembered_key(tmp_path, capsys, monkeypatch):
    from datagen.teacher.redact import remember_secret

    secret = "sk-test-" + "z" * 24
    remember_secret(secret)
    missing = tmp_path / secret
    assert main(["status", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error:") and secret not in err


def test_run_mode_flag_sets_teacher_mode(tmp_path, monkeypatch):
    """`datagen run --mode batch` is `--set teacher.mode=batch`; the pipeline gets that config."""
    import datagen.run.pipeline as pipeline

    seen = {}

    def fake_run(config, out, **kwargs):
        seen["mode"] = config.teacher.mode
        return {}

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("name: t\nteacher: {base_url: 'http://127.0.0.1:9/v1', model: m}\n", encoding="utf-8")
    main(["run", str(cfg), "--out", str(tmp_path / "out"), "--mode", "batch"])
    assert seen == {"mode": "batch"}


def test_serve_teacher_old_model_flag_warns(capsys):
    from datagen.cli.run import _gguf

    args = build_parser().parse_args(["serve-teacher", "--model", "x.gguf"])
    assert _gguf(args, "--model") == "x.gguf"
    assert "--model is deprecated here; write --teacher-gguf" in capsys.readouterr().err
    args = build_parser().parse_args(["serve-teacher", "--teacher-gguf", "y.gguf"])
    assert _gguf(args, "--model") == "y.gguf"


def test_run_with_targets_goes_in_waves(tmp_path, monkeypatch):
    """A config with `targets` buys accepted rows per cell in waves (datagen.run.waves), not one pass."""
    import datagen.run.pipeline as pipeline
    import datagen.run.waves as waves

    called = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: called.append("pipeline") or {})
    monkeypatch.setattr(waves.QuotaRun, "run", lambda self: called.append("waves") or {})
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "name: t\nteacher: {base_url: 'http://127.0.0.1:9/v1', model: m, prices: {m: {input: 1, output: 2}}}\n"
        "targets: {writing/en/hhh: 3}\nbudget: {usd: 1}\n",
        encoding="utf-8",
    )
    main(["run", str(cfg), "--out", str(tmp_path / "out")])
    assert called == ["waves"]
