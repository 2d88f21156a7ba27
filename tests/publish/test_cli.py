"""`datagen publish` on the command line: --dry-run output, uploads, refusals."""

from __future__ import annotations

import datasets
import pytest

from datagen.cli import main
from tests.publish.runs import make_run_dir

REPO = "datagen-org/cli-demo"


@pytest.fixture
def run(tmp_path):
    return make_run_dir(tmp_path / "run", repo_id=REPO)


def test_dry_run_prints_tree_and_card_and_uploads_nothing(run, fake_hub, capsys):
    assert main(["publish", str(run), "--dry-run", "--card-lines", "12"]) == 0
    out = capsys.readouterr().out
    tree, card = out.split("README.md (first 12 of ", 1)
    assert tree.startswith("dataset/\n")
    for line in (
        "├── data/",
        "│   ├── hhh/",
        "│   └── plugin/",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
        "└── datagen/",
        "build.json",
    ):
        assert line in tree
    card_lines = (run / "dataset" / "README.md").read_text(encoding="utf-8").splitlines()
    assert card.split("\n", 1)[1].startswith("\n".join(card_lines[:12]) + "\n")
    assert "license: apache-2.0" in card
    assert f"check: passed. Dry run: nothing uploaded to {REPO}." in out
    assert fake_hub.requests == []


def test_dry_run_without_license_warns_loudly(tmp_path, fake_hub, capsys):
    run = make_run_dir(tmp_path / "run", license=None)
    assert main(["publish", str(run), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "NO LICENSE" in captured.err
    assert "an upload would be refused: no license" in captured.out
    assert (run / "dataset" / "README.md").exists()
    assert fake_hub.requests == []


def test_upload_without_license_fails_and_says_why(tmp_path, fake_hub, capsys):
    run = make_run_dir(tmp_path / "run", license=None)
    assert main(["publish", str(run), "--repo-id", REPO]) == 1
    err = capsys.readouterr().err
    assert "Error:" in err and "without a license" in err and "--license" in err
    assert fake_hub.requests == []


def test_upload_prints_the_url_and_loads_back(run, fake_hub, capsys):
    assert main(["publish", str(run), "--private", "--moss-jsonl"]) == 0
    url = capsys.readouterr().out.strip().splitlines()[-1]
    assert url == f"{fake_hub.url}/datasets/{REPO}"
    assert fake_hub.repo(REPO).private
    head = fake_hub.commits(REPO)[-1]
    assert {"moss/train.jsonl", "moss/val.jsonl", "README.md"} <= set(head.files)
    total = sum(
        datasets.load_dataset(REPO, c, split=s).num_rows
        for c in ("hhh", "plugin")
        for s in ("train", "validation")
    )
    assert total == 10


def test_upload_of_a_folder_built_earlier(run, fake_hub, capsys):
    assert main(["publish", str(run), "--dry-run", "--license", "cc-by-4.0"]) == 0
    capsys.readouterr()
    assert main(["publish", str(run / "dataset"), "--repo-id", REPO, "--commit-message", "v1"]) == 0
    assert capsys.readouterr().out.strip() == f"{fake_hub.url}/datasets/{REPO}"
    assert fake_hub.commits(REPO)[-1].title == "v1"
    card = fake_hub.read(REPO, "README.md").decode()
    assert "\nlicense: cc-by-4.0\n" in card


def test_missing_repo_id_is_a_clear_error(tmp_path, fake_hub, capsys):
    run = make_run_dir(tmp_path / "run")  # no publish.repo_id
    assert main(["publish", str(run)]) == 1
    assert "--repo-id ORG/NAME" in capsys.readouterr().err
    assert fake_hub.requests == []


def test_unfinished_run_is_a_clear_error(tmp_path, capsys):
    run = make_run_dir(tmp_path / "run")
    (run / "final.jsonl").unlink()
    assert main(["publish", str(run), "--dry-run"]) == 1
    assert "the run has not finished" in capsys.readouterr().err
