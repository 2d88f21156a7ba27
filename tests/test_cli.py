"""The top-level `datagen` command."""

import pytest

from datagen.cli import main


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
