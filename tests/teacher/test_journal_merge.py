"""Merging workers' journal shards: the journal's own upsert rule, paid counters that add up, and
merges that can be repeated without counting a call twice."""

from __future__ import annotations

from datagen.teacher.journal import Journal, JournalEntry
from datagen.teacher.journal_merge import ShardJournal, merge_journals, shard_path, shard_paths


def write(path, *entries: JournalEntry) -> None:
    with Journal(path) as j:
        for e in entries:
            j.put(e)
        j.flush()


def entry(
    key: str,
    status: str = "ok",
    *,
    attempts: int = 1,
    paid: int = 10,
    updated: float = 1.0,
    response: str | None = "answer",
) -> JournalEntry:
    return JournalEntry(
        key=key,
        status=status,
        request={"k": key},
        model="m",
        response=response if status == "ok" else None,
        error=None if status == "ok" else "server_error",
        prompt_tokens=paid,
        paid_prompt_tokens=paid,
        paid_cost=paid / 1000,
        attempts=attempts,
        created=updated,
        updated=updated,
    )


def row(path, key: str) -> JournalEntry:
    with Journal(path) as j:
        found = j.get(key)
    assert found is not None
    return found


def test_merge_adds_paid_work_and_never_replaces_ok_by_a_failure(tmp_path):
    main = tmp_path / "journal.sqlite"
    write(main, entry("a", "ok", updated=5.0), entry("b", "failed", updated=1.0))
    s0, s1 = shard_path(tmp_path, 0), shard_path(tmp_path, 1)
    write(s0, entry("a", "failed", attempts=2, paid=7, updated=9.0), entry("c", "ok", attempts=1, paid=3))
    write(s1, entry("b", "ok", attempts=3, paid=4, updated=2.0, response="fixed"))
    assert shard_paths(tmp_path) == [s0, s1]

    stats = merge_journals(main, shard_paths(tmp_path))
    assert (stats.shards, stats.rows, stats.new) == (2, 3, 1)
    a, b, c = row(main, "a"), row(main, "b"), row(main, "c")
    assert (a.status, a.response, a.attempts, a.paid_prompt_tokens) == ("ok", "answer", 3, 17)
    assert (b.status, b.response, b.attempts, b.paid_prompt_tokens) == ("ok", "fixed", 4, 14)
    assert (c.status, c.attempts, c.paid_prompt_tokens) == ("ok", 1, 3)


def test_merging_again_counts_only_what_is_new(tmp_path):
    main = tmp_path / "journal.sqlite"
    shard = shard_path(tmp_path, 0)
    write(shard, entry("a", "failed", attempts=2, paid=5))
    merge_journals(main, [shard])
    merge_journals(main, [shard])  # a crash after the merge, or the next stage: the same shard again
    assert (row(main, "a").attempts, row(main, "a").paid_prompt_tokens) == (2, 5)

    write(shard, entry("a", "ok", attempts=1, paid=6, updated=3.0))  # the next run's try succeeded
    assert merge_journals(main, [shard]).new == 0
    a = row(main, "a")
    assert (a.status, a.attempts, a.paid_prompt_tokens) == ("ok", 3, 11)

    # a shard deleted and made again is a new shard: all it holds counts
    for p in shard.parent.glob(shard.name + "*"):
        p.unlink()
    write(shard, entry("a", "ok", attempts=1, paid=1, updated=4.0))
    merge_journals(main, [shard])
    assert (row(main, "a").attempts, row(main, "a").paid_prompt_tokens) == (4, 12)


def test_a_shard_journal_reads_the_merged_journal_and_writes_only_its_own(tmp_path):
    main = tmp_path / "journal.sqlite"
    write(main, entry("old", "ok"), entry("bad", "failed"))
    shard = ShardJournal(shard_path(tmp_path, 3), main).open()
    try:
        assert shard.get_ok("old").response == "answer"
        assert shard.get_ok("bad") is None  # a failure is asked again
        shard.put(entry("new", "ok"))
        shard.flush()
        assert shard.get_ok("new") is not None
    finally:
        shard.close()
    with Journal(main) as j:
        assert j.get("new") is None
    with Journal(shard_path(tmp_path, 3)) as j:
        assert j.get("old") is None and j.get("new") is not None
