"""Publish a tiny run to the fake Hub with the real huggingface_hub client and load it back with
`datasets.load_dataset` from that server."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from datagen.errors import PublishError
from datagen.formats.messages import to_messages
from datagen.formats.moss import render_text
from datagen.publish.build import build_dataset_folder
from datagen.publish.card import split_card
from datagen.publish.hub import publish
from datagen.publish.rows import row_messages, row_to_conversation
from datagen.splits import split_for
from tests.publish.runs import FUNNEL, make_run_dir, sample_conversations

REPO = "datagen-org/moss-demo"


@pytest.fixture
def published(tmp_path, fake_hub):
    convs = sample_conversations()
    run = make_run_dir(tmp_path / "run", convs, repo_id=REPO)
    folder = build_dataset_folder(run, tmp_path / "dataset")
    url = publish(folder, REPO, private=True)
    return convs, folder, url


def test_publish_uploads_one_commit_through_lfs(published, fake_hub):
    convs, folder, url = published
    assert url == f"{fake_hub.url}/datasets/{REPO}"
    commits = fake_hub.commits(REPO)
    # the Hub's own initial commit, then exactly one commit naming the run
    assert [c.title for c in commits] == ["initial commit", "datagen: publish run demo (0123456789abcdef)"]
    head = commits[-1].files
    assert set(folder.files) <= set(head)
    parquet = [p for p in head if p.endswith(".parquet")]
    assert parquet and all(head[p].sha256 for p in parquet), "parquet shards must go through LFS"
    assert len(fake_hub.requests_matching("PUT", r"^/_lfs/upload/")) == len(parquet)
    assert fake_hub.requests_matching("POST", rf"^/api/datasets/{REPO}/commit/main$") == [
        f"/api/datasets/{REPO}/commit/main"
    ]
    assert fake_hub.repo(REPO).private


def test_load_dataset_from_hub_round_trips(published):
    convs, folder, _ = published
    by_id = {c.id: c for c in convs}
    expected = Counter((c.kind, split_for(c.id, 0.3)) for c in convs)
    assert {k for k, _ in expected} == {"hhh", "plugin"} and {s for _, s in expected} == {
        "train",
        "validation",
    }
    seen = 0
    for (config, split), n in sorted(expected.items()):
        ds = datasets.load_dataset(REPO, config, split=split)
        assert ds.num_rows == n, (config, split)
        assert folder.counts[config][split] == n
        for row in ds:
            original = by_id[row["id"]]
            back = row_to_conversation(row)
            assert render_text(back) == render_text(original)
            want = to_messages(original, metadata=False, tool_arguments="string")["messages"]
            assert row_messages(row) == want
            assert [m["role"] for m in row["messages"]] == [m["role"] for m in want]
            assert back.lineage == original.lineage  # sampling params come back exact (0.7, not 0.70000001)
            assert back.scores == original.scores and back.usage == original.usage
            assert back.tags == original.tags
            seen += 1
    assert seen == len(convs)


def test_card_on_the_hub(published):
    convs, _, _ = published
    card_path = hf_hub_download(REPO, "README.md", repo_type="dataset")
    meta, body = split_card(open(card_path, encoding="utf-8").read())
    assert meta["license"] == "apache-2.0"
    assert meta["language"] == ["en", "zh"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["task_categories"] == ["text-generation"]
    assert {"synthetic", "datagen", "moss", "tool-use"} <= set(meta["tags"])
    assert meta["pretty_name"] == "Demo MOSS dialogues"
    configs = {c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]} for c in meta["configs"]}
    assert configs == {
        c: {"train": f"data/{c}/train-*", "validation": f"data/{c}/validation-*"} for c in ("hhh", "plugin")
    }
    infos = {
        i["config_name"]: {s["name"]: s["num_examples"] for s in i["splits"]} for i in meta["dataset_info"]
    }
    assert sum(n for splits in infos.values() for n in splits.values()) == len(convs)
    # the body: the funnel table row for every step, the filters, how to load it
    for step in FUNNEL["steps"]:
        assert f"| {step['step']} | {step['in']} | {step['kept']} | {step['dropped']} |" in body
    assert "`near_dup.threshold` | `0.85`" in body
    assert f'load_dataset("{REPO}", split="train")' in body  # the default config needs no name
    assert f'load_dataset("{REPO}", "plugin", split="train")' in body
    assert [c.get("default", False) for c in meta["configs"]] == [True, False]
    # and the Hub loads it that way
    assert datasets.load_dataset(REPO, split="train").num_rows == sum(
        1 for c in convs if c.kind == "hhh" and split_for(c.id, 0.3) == "train"
    )
    assert "teacher-7b-chat" in body and "user:secret" not in body
    manifest = open(
        hf_hub_download(REPO, "datagen/manifest.json", repo_type="dataset"), encoding="utf-8"
    ).read()
    assert '"fingerprint": "0123456789abcdef"' in manifest and "user:secret" not in manifest


def test_private_repo_is_invisible_without_token(published):
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info(REPO, repo_type="dataset")


def test_republish_replaces_stale_shards(tmp_path, fake_hub):
    convs = sample_conversations()
    run = make_run_dir(tmp_path / "run", convs)
    first = build_dataset_folder(run, tmp_path / "ds", shard_rows=2)
    publish(first, REPO)
    hhh_train = [p for p in fake_hub.commits(REPO)[-1].files if p.startswith("data/hhh/train-")]
    assert len(hhh_train) == 2  # 4 rows, 2 per shard
    second = build_dataset_folder(run, tmp_path / "ds")  # one shard per split now
    publish(second, REPO, commit_message="rebuild")
    head = fake_hub.commits(REPO)[-1]
    assert head.title == "rebuild"
    assert sorted(p for p in head.files if p.startswith("data/")) == sorted(
        p for p in second.files if p.startswith("data/")
    )
    ds = datasets.load_dataset(REPO, "hhh", split="train")
    assert ds.num_rows == second.counts["hhh"]["train"]


def test_private_upload_to_existing_public_repo_is_refused(tmp_path, fake_hub):
    folder = build_dataset_folder(make_run_dir(tmp_path / "run"), tmp_path / "ds")
    publish(folder, REPO, private=False)
    with pytest.raises(PublishError, match="already exists and is public"):
        publish(folder, REPO, private=True)
    assert len(fake_hub.commits(REPO)) == 2
