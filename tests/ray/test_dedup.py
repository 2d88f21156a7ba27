"""Global dedup on a real two-node Ray cluster keeps exactly the rows the local keep-first filters
keep, with the same `duplicate_of` and reason, however the rows are cut into shards."""

from __future__ import annotations

import random

import numpy as np
import pytest

from datagen.filters.dedup import ExactDedupFilter, NearDedupFilter
from datagen.text.exact import dialogue_hash, prompt_hash
from datagen.text.neardup_ray import exact_duplicates, near_duplicates, split_id
from tests.filters.conftest import conv

WORDS = [f"w{i}" for i in range(400)]


def chain(rng: random.Random) -> list[str]:
    """a, b, c with a~b and b~c on word bigrams at Jaccard 0.5, but not a~c: keep-first keeps a
    and c, where one keeper per connected component would keep a alone."""
    w = rng.sample(WORDS, 14)
    return [" ".join(w[0:10]), " ".join(w[2:12]), " ".join(w[4:14])]


def corpus(seed: int = 5, n: int = 1500) -> list[str]:
    rng = random.Random(seed)
    texts: list[str] = []
    while len(texts) < n:
        r = rng.random()
        if r < 0.15:
            texts += chain(rng)
        elif r < 0.4 and texts:
            base = rng.choice(texts).split()
            if len(base) > 3:
                del base[rng.randrange(len(base))]
            texts.append(" ".join(base))  # a near (or exact) copy of an earlier row
        elif r < 0.42:
            texts.append("")  # empty texts are never duplicates
        else:
            texts.append(" ".join(rng.sample(WORDS, rng.randint(4, 12))))
    return texts


def local_near(texts: list[str], **kwargs) -> list[str | None]:
    """The local filter's verdicts: duplicate_of (a row index as a string) or None when kept."""
    f = NearDedupFilter(**kwargs)
    rows = [conv((t, "answer"), id=str(i)) for i, t in enumerate(texts)]
    return [v.duplicate_of for v in f.decide_batch([(c, f.prepare(c)) for c in rows])]


def cut(items: list, n_shards: int, seed: int) -> list[list]:
    rng = random.Random(seed)
    bounds = sorted(rng.sample(range(1, len(items)), n_shards - 1))
    return [items[a:b] for a, b in zip([0, *bounds], [*bounds, len(items)], strict=True)]


def flatten(verdicts, shards) -> list[str | None]:
    """Per row in input order: the input index of the row it repeats, or None."""
    starts = np.cumsum([0] + [len(s) for s in shards])
    out: list[str | None] = []
    for v in verdicts:
        for d in v.duplicate_of.tolist():
            if d < 0:
                out.append(None)
            else:
                shard, pos = split_id(d)
                out.append(str(starts[shard] + pos))
    return out


@pytest.mark.parametrize(("n_shards", "parts"), [(1, 1), (4, 3), (9, 2)])
def test_near_dedup_on_ray_keeps_what_the_local_filter_keeps(ray_cluster, n_shards, parts):
    texts = corpus()
    local = local_near(texts, unit="prompt")
    # the input exercises what a component keeper would get wrong: chains where both ends stay
    ends_kept = sum(
        1
        for i in range(0, len(texts) - 2)
        if local[i] is None
        and local[i + 1] == str(i)
        and local[i + 2] is None
        and texts[i + 2].split()[:6] == texts[i].split()[4:10]
    )
    assert ends_kept >= 5
    assert 0.1 * len(texts) < sum(d is not None for d in local) < 0.6 * len(texts)

    shards = cut(texts, n_shards, seed=n_shards) if n_shards > 1 else [texts]
    params = NearDedupFilter(unit="prompt").index.params()
    got = flatten(near_duplicates(shards, params=params, parts=parts), shards)
    assert got == local


def test_near_dedup_rouge_method_and_loaded_shards(ray_cluster, tmp_path):
    texts = corpus(seed=11, n=600)
    local = local_near(texts, unit="prompt", method="rouge")
    paths = []
    for i, shard in enumerate(cut(texts, 3, seed=2)):
        path = tmp_path / f"shard{i}.txt"
        path.write_text("\n".join(shard), encoding="utf-8")
        paths.append(str(path))
    params = NearDedupFilter(unit="prompt", method="rouge").index.params()
    verdicts = near_duplicates(paths, params=params, load=read_lines, parts=2)
    assert flatten(verdicts, [read_lines(p) for p in paths]) == local
    assert any(d is not None for d in local)


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")


def test_exact_dedup_on_ray_is_the_local_filters_group_by(ray_cluster):
    rng = random.Random(3)
    prompts = [f"prompt {i}" for i in range(60)]
    answers = ["a", "b", "c"]
    rows = [
        conv((rng.choice(prompts) + rng.choice(["", "!", "  "]), rng.choice(answers)), id=f"r{i}")
        for i in range(900)
    ]
    for units in (["prompt", "dialogue"], ["dialogue"]):
        f = ExactDedupFilter(units=units)
        local = f.decide_batch([(c, f.prepare(c)) for c in rows])
        order = [u for u in ("dialogue", "prompt") if u in units]  # the filter's check order
        hashes = np.array(
            [[{"dialogue": dialogue_hash, "prompt": prompt_hash}[u](c) for u in order] for c in rows],
            dtype=np.uint64,
        )
        shards = cut(list(range(len(rows))), 5, seed=1)
        verdicts = exact_duplicates([hashes[s[0] : s[-1] + 1] for s in shards], parts=3)
        got_dup = flatten(verdicts, shards)
        got_col = [c for v in verdicts for c in v.column.tolist()]
        assert [None if v.keep else int(v.duplicate_of[1:]) for v in local] == [
            None if d is None else int(d) for d in got_dup
        ]
        assert [v.reason for v in local] == [None if c < 0 else f"duplicate_{order[c]}" for c in got_col]
        assert {v.reason for v in local} >= (
            {None, "duplicate_dialogue", "duplicate_prompt"}
            if len(units) == 2
            else {None, "duplicate_dialogue"}
        )
