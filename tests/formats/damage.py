"""Deliberate damage to MOSS SFT records, for tests that parsing never silently changes data."""

import copy

from datagen.formats.moss import SFT_KEYS


def mutations(record, rng, n):
    """n copies of `record`, each with one segment damaged: a character deleted, inserted or
    replaced near a tag (where the grammar is), or a known noise form."""
    alphabet = [" ", "\n", ",", '"', "'", "<", ">", "|", ":", "None", "=>", "x", "<eor>", "<|1|>: "]
    for _ in range(n):
        rec = copy.deepcopy(record)
        turn = rng.choice(list(rec["chat"]))
        key = rng.choice(list(SFT_KEYS))
        s = rec["chat"][turn][key]
        where = rng.choice([0, 1, 2, len(s) // 2, len(s) - 8, len(s) - 2, len(s) - 1, rng.randrange(len(s))])
        op = rng.randrange(3)
        if op == 0:
            s = s[:where] + s[where + 1 :]
        elif op == 1:
            s = s[:where] + rng.choice(alphabet) + s[where:]
        else:
            s = s[:where] + rng.choice(alphabet) + s[where + 1 :]
        rec["chat"][turn][key] = s
        yield rec
