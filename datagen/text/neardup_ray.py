"""Global dedup on Ray: near duplicates (MinHash LSH) and exact duplicates (a hash group-by) over
shards spread across a cluster, keeping exactly the rows the local keep-first filters keep.

The local filters decide row by row in input order: a row is dropped when it repeats a row *kept*
before it (near: it shares an LSH band bucket with it and their signatures agree enough; exact: a
normalised hash is the same). That rule is greedy, not "one keeper per connected component": in a
chain a~b, b~c with a!~c it keeps a and c. So the cluster finds components only to split the work,
and replays the local rule inside each one:

1. map, one task per shard: the local index's own fingerprints (or the given hashes), and each
   row's bucket keys, hash-partitioned into `parts` pieces;
2. group, one task per piece: rows sharing a bucket key become star edges (first row, other row);
3. components, one task (scipy): connected components of the edges. A row on no edge shares no
   bucket with any other row, so nothing can drop it: it is kept with no further work (most rows);
4. route and decide, one task per piece of the components: whole components, rows in input order,
   through a fresh local index. A row's local decision only looks at earlier kept rows sharing a
   bucket with it, all in its own component, so replaying each component alone decides exactly as
   the one stream did, `duplicate_of` included (the closest candidate, the earliest among equals).

Rows are numbered `shard << 40 | position` (`row_id`), so the order of ids is the input order.
Call these with Ray initialised (`ray.init(...)`); every step is a Ray task of one CPU and the data
moves through the object store, never through the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen.ray_support import cluster_cpus, import_ray
from datagen.text.neardup import FingerprintBatch, NearDupIndex

_SHIFT = 40
_POS_MASK = (1 << _SHIFT) - 1
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SLICE = 10_000  # rows fingerprinted at once in a map task


def row_id(shard: int, position: int) -> int:
    """The global id of row `position` of shard `shard` (ids sort in input order)."""
    return (shard << _SHIFT) | position


def split_id(rid: int) -> tuple[int, int]:
    """(shard, position) of a global row id."""
    return rid >> _SHIFT, rid & _POS_MASK


@dataclass(slots=True)
class ShardVerdicts:
    """One shard's decisions: `duplicate_of[i]` is the global id of the kept row that row i repeats
    (-1: kept). For exact dedup `column[i]` is the hash column that matched (-1: kept)."""

    duplicate_of: np.ndarray
    column: np.ndarray | None = None

    @property
    def kept(self) -> np.ndarray:
        """Boolean mask of the rows kept."""
        return self.duplicate_of < 0


# -- steps (plain functions; wrapped as Ray tasks in `_remote`) -----------------------------------------


def _mix(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (keys * _MIX) >> np.uint64(24)


def _split_keys(keys: np.ndarray, ids: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(keys, ids) split by a hash of the key into `parts` pieces, each row to exactly one piece."""
    mixed = _mix(keys)
    mixed %= np.uint64(parts)
    piece = mixed.astype(np.uint16 if parts <= 1 << 16 else np.int64)
    del mixed
    order = np.argsort(piece, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(piece, minlength=parts))])
    del piece
    k, i = keys[order], ids[order]
    return [(k[bounds[p] : bounds[p + 1]], i[bounds[p] : bounds[p + 1]]) for p in range(parts)]


def _near_map(shard: int, spec: Any, load: Callable | None, params: dict, parts: int) -> tuple:
    texts = load(spec) if load is not None else spec
    index = NearDupIndex(**params)
    texts = list(texts)
    # in slices: the shingle hashes are Python ints (~3.5 KB a row), the fingerprints 0.5 KB
    fps = _concat(
        [index.fingerprint_batch(texts[i : i + _SLICE]) for i in range(0, len(texts), _SLICE)]
        or [index.fingerprint_batch([])]
    )
    n = len(fps)
    live = np.flatnonzero(~fps.empty)
    ids = (np.int64(shard) << np.int64(_SHIFT)) | live.astype(np.int64)
    # one key per (band, bucket): the band is mixed into the key. Two different (band, bucket) pairs
    # landing on one key only merge components, which never changes a decision.
    with np.errstate(over="ignore"):
        salted = fps.band_keys[live] ^ (np.arange(1, index.bands + 1, dtype=np.uint64) * _MIX)[None, :]
    keys = salted.ravel()
    rep = np.repeat(ids, index.bands)
    return (n, fps, *_split_keys(keys, rep, parts))


def _exact_map(shard: int, spec: Any, load: Callable | None, parts: int) -> tuple:
    hashes = np.asarray(load(spec) if load is not None else spec, dtype=np.uint64)
    if hashes.ndim == 1:
        hashes = hashes[:, None]
    n, cols = hashes.shape
    ids = (np.int64(shard) << np.int64(_SHIFT)) | np.arange(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        salted = hashes ^ (np.arange(1, cols + 1, dtype=np.uint64) * _MIX)[None, :]
    return (n, hashes, *_split_keys(salted.ravel(), np.repeat(ids, cols), parts))


def _group(*pieces: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Star edges (first id, other id) of every key held by more than one row, shape (m, 2)."""
    keys = np.concatenate([k for k, _ in pieces]) if pieces else np.empty(0, np.uint64)
    ids = np.concatenate([i for _, i in pieces]) if pieces else np.empty(0, np.int64)
    if keys.size == 0:
        return np.empty((0, 2), np.int64)
    order = np.argsort(keys, kind="stable")
    k, i = keys[order], ids[order]
    start = np.empty(k.size, bool)
    start[0] = True
    np.not_equal(k[1:], k[:-1], out=start[1:])
    group = np.cumsum(start) - 1
    anchor = i[np.flatnonzero(start)][group]
    member = ~start & (anchor != i)
    edges = np.stack([anchor[member], i[member]], axis=1)
    return np.unique(edges, axis=0) if len(edges) else edges


def _components(*edge_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels): every id on an edge, sorted, and its component's smallest id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate(edge_sets) if edge_sets else np.empty((0, 2), np.int64)
    if edges.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    nodes, inverse = np.unique(edges.ravel(), return_inverse=True)
    a, b = inverse[0::2], inverse[1::2]
    n = len(nodes)
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    _, first = np.unique(comp, return_index=True)  # nodes are sorted: the first is the smallest
    return nodes, nodes[first[comp]]


def _select(payload: Any, pos: np.ndarray) -> Any:
    if isinstance(payload, FingerprintBatch):
        toks = payload.tokens
        return FingerprintBatch(
            payload.signatures[pos],
            payload.band_keys[pos],
            payload.empty[pos],
            [toks[j] for j in pos] if toks is not None else None,
        )
    return payload[pos]


def _route(shard: int, payload: Any, nodes: np.ndarray, labels: np.ndarray, parts: int) -> tuple:
    """This shard's rows that lie on an edge, with their payload, split by component."""
    lo, hi = np.searchsorted(nodes, [shard << _SHIFT, (shard + 1) << _SHIFT])
    ids, labs = nodes[lo:hi], labels[lo:hi]
    piece = (_mix(labs.astype(np.uint64)) % np.uint64(parts)).astype(np.int64)
    out = []
    for p in range(parts):
        sel = np.flatnonzero(piece == p)
        out.append((ids[sel], _select(payload, (ids[sel] & _POS_MASK))))
    return tuple(out) if parts > 1 else out[0]


def _concat(payloads: list[Any]) -> Any:
    if payloads and isinstance(payloads[0], FingerprintBatch):
        toks = None if payloads[0].tokens is None else [t for p in payloads for t in p.tokens]
        return FingerprintBatch(
            np.concatenate([p.signatures for p in payloads]),
            np.concatenate([p.band_keys for p in payloads]),
            np.concatenate([p.empty for p in payloads]),
            toks,
        )
    return np.concatenate(payloads)


def _near_decide(params: dict, *pieces: tuple[np.ndarray, Any]) -> tuple[np.ndarray, np.ndarray, None]:
    ids = np.concatenate([i for i, _ in pieces])
    if ids.size == 0:
        return ids, ids, None
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    batch = _select(_concat([p for _, p in pieces]), order)
    index = NearDupIndex(**params)
    dups = index.check_and_add_batch([str(i) for i in ids.tolist()], batch)
    dup = np.array([-1 if d is None else int(d) for d in dups], dtype=np.int64)
    hit = dup >= 0
    return ids[hit], dup[hit], None


def _exact_decide(*pieces: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The local exact filter's rule: a row repeats the first kept row with the same hash in the
    first column (in column order) that has one; a kept row adds every column's hash."""
    ids = np.concatenate([i for i, _ in pieces])
    if ids.size == 0:
        return ids, ids, ids
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    hashes = np.concatenate([h for _, h in pieces])[order].tolist()
    seen: list[dict[int, int]] = [{} for _ in range(len(hashes[0]))]
    out_ids, out_dup, out_col = [], [], []
    for rid, row in zip(ids.tolist(), hashes, strict=True):
        for c, h in enumerate(row):
            first = seen[c].get(h)
            if first is not None:
                out_ids.append(rid)
                out_dup.append(first)
                out_col.append(c)
                break
        else:
            for c, h in enumerate(row):
                seen[c].setdefault(h, rid)
    return (np.array(out_ids, np.int64), np.array(out_dup, np.int64), np.array(out_col, np.int64))


def _assemble(shard: int, n: int, columns: bool, *decided: tuple) -> ShardVerdicts:
    """This shard's verdicts from every decide task's (ids, duplicate_of, column), ids sorted."""
    dup = np.full(n, -1, np.int64)
    col = np.full(n, -1, np.int64) if columns else None
    lo, hi = shard << _SHIFT, (shard + 1) << _SHIFT
    for ids, dups, cols in decided:
        a, b = np.searchsorted(ids, [lo, hi])
        pos = ids[a:b] & _POS_MASK
        dup[pos] = dups[a:b]
        if col is not None:
            col[pos] = cols[a:b]
    return ShardVerdicts(dup, col)


# -- the pipeline ---------------------------------------------------------------------------------


_TASKS: dict[str, Any] = {}


def _remote(name: str) -> Any:
    if name not in _TASKS:
        ray = import_ray()
        fns = {
            "near_map": _near_map,
            "exact_map": _exact_map,
            "group": _group,
            "components": _components,
            "route": _route,
            "near_decide": _near_decide,
            "exact_decide": _exact_decide,
            "assemble": _assemble,
        }
        _TASKS[name] = ray.remote(num_cpus=1)(fns[name])
    return _TASKS[name]


def _pipeline(
    maps: list[list[Any]], parts: int, decide: Callable[[list[Any]], Any], columns: bool, as_refs: bool
) -> list[Any]:
    """Steps 2-4 over map outputs `[n, payload, piece_0, ..., piece_{parts-1}]` (refs). Each
    intermediate is let go as soon as the tasks that read it are submitted, so the object store
    frees it when they finish (a shuffle's pieces are most of the bytes)."""
    ray = import_ray()
    edges = [_remote("group").remote(*[m[2 + p] for m in maps]) for p in range(parts)]
    for m in maps:
        del m[2:]
    nodes, labels = _remote("components").options(num_returns=2).remote(*edges)
    del edges
    routed = [
        _remote("route").options(num_returns=parts).remote(s, m[1], nodes, labels, parts)
        for s, m in enumerate(maps)
    ]
    del nodes, labels
    routed = [r if isinstance(r, list) else [r] for r in routed]
    decided = [decide([r[p] for r in routed]) for p in range(parts)]
    del routed
    verdicts = [_remote("assemble").remote(s, m[0], columns, *decided) for s, m in enumerate(maps)]
    return verdicts if as_refs else ray.get(verdicts)


def default_parts() -> int:
    """Pieces per shuffle: twice the cluster's CPUs, so every CPU has work while stragglers finish,
    at most 256: each map task returns one object per piece, and shards x pieces objects is what
    the driver has to own."""
    return min(256, 2 * cluster_cpus())


def near_duplicates(
    shards: Sequence[Any],
    *,
    params: dict | None = None,
    load: Callable | None = None,
    parts: int | None = None,
    as_refs: bool = False,
) -> list[Any]:
    """Near-duplicate verdicts for shards of texts, as the local `near_dedup` filter decides them
    for the same texts in the same order (shard 0 first).

    Args:
        shards: per shard, a list of texts, an ObjectRef to one, or (with `load`) anything `load`
            turns into a list of texts inside a Ray task (a file path, say).
        params: `NearDupIndex` arguments (`NearDupIndex(...).params()`); default the prompt unit.
        load: a picklable function spec -> texts, run where the shard is mapped.
        parts: pieces of each shuffle (default `default_parts()`).
        as_refs: return ObjectRefs of the verdicts instead of the verdicts.

    Returns: one `ShardVerdicts` per shard.
    """
    params = dict(params) if params is not None else NearDupIndex("prompt").params()
    parts = parts or default_parts()
    maps = [
        list(_remote("near_map").options(num_returns=parts + 2).remote(s, spec, load, params, parts))
        for s, spec in enumerate(shards)
    ]
    return _pipeline(maps, parts, lambda refs: _remote("near_decide").remote(params, *refs), False, as_refs)


def exact_duplicates(
    shards: Sequence[Any], *, load: Callable | None = None, parts: int | None = None, as_refs: bool = False
) -> list[Any]:
    """Exact-duplicate verdicts for shards of hash rows, as the local `exact_dedup` filter decides
    them: each row is C 64-bit hashes (e.g. dialogue, then prompt, the filter's check order); a row
    repeats the first kept row sharing a hash in the first column, in column order, that has one.

    Args:
        shards: per shard, a uint64 array (n, C) or (n,), an ObjectRef to one, or (with `load`)
            anything `load` turns into one inside a Ray task.
        load: a picklable function spec -> hashes, run where the shard is mapped.
        parts: pieces of each shuffle (default `default_parts()`).
        as_refs: return ObjectRefs of the verdicts instead of the verdicts.

    Returns: one `ShardVerdicts` per shard, with `column` set.
    """
    parts = parts or default_parts()
    maps = [
        list(_remote("exact_map").options(num_returns=parts + 2).remote(s, spec, load, parts))
        for s, spec in enumerate(shards)
    ]
    return _pipeline(maps, parts, lambda refs: _remote("exact_decide").remote(*refs), True, as_refs)


# -- the run's dedup backend -------------------------------------------------------------------------


@dataclass
class RayDedup:
    """The `datagen.stage.DedupBackend` of a run on Ray: flat lists of texts or hash rows are cut into
    shards, put in the object store and decided by `near_duplicates` / `exact_duplicates` on the
    cluster this process is connected to; the answers come back as flat positions.

    Args:
        log: where the one line per step goes (how many rows, how many duplicates).
        shard_rows: rows per shard (default: the rows spread over the cluster's CPUs, 1,000 to
            100,000 a shard).
        parts: pieces of each shuffle (default `default_parts()`).
    """

    log: Callable[[str], None] = print
    shard_rows: int | None = None
    parts: int | None = None
    #: (step, rows, duplicates, shards) of every step decided, in order.
    decided: list[tuple[str, int, int, int]] = field(default_factory=list)

    def _bounds(self, n: int) -> list[int]:
        size = self.shard_rows or min(100_000, max(1_000, -(-n // cluster_cpus())))
        return [*range(0, n, size), n]

    def _run(
        self, step: str, rows: Sequence[Any], decide: Callable[..., list[ShardVerdicts]]
    ) -> ShardVerdicts:
        ray = import_ray()
        bounds = self._bounds(len(rows))
        shards = [ray.put(rows[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        verdicts = decide(shards, parts=self.parts)
        starts = np.asarray(bounds[:-1], np.int64)
        dup = np.concatenate([v.duplicate_of for v in verdicts]) if verdicts else np.empty(0, np.int64)
        hit = dup >= 0
        dup[hit] = starts[dup[hit] >> _SHIFT] + (dup[hit] & _POS_MASK)
        cols = [v.column for v in verdicts if v.column is not None]
        n_dup = int(hit.sum())
        self.decided.append((step, len(rows), n_dup, len(shards)))
        self.log(f"{step} ran on Ray: {len(rows)} rows in {len(shards)} shard(s), {n_dup} duplicates")
        return ShardVerdicts(dup, np.concatenate(cols) if cols else None)

    def near_duplicates(self, texts: Sequence[str], params: Mapping[str, Any], *, step: str) -> np.ndarray:
        """Per text, the position of the earlier kept text it nearly repeats (-1: kept)."""
        return self._run(
            step, list(texts), lambda shards, parts: near_duplicates(shards, params=dict(params), parts=parts)
        ).duplicate_of

    def exact_duplicates(
        self, hashes: Sequence[Sequence[int]], *, step: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row of hashes: the position of the earlier kept row it repeats and the matched column
        (-1, -1: kept)."""
        out = self._run(step, np.asarray(hashes, dtype=np.uint64), exact_duplicates)
        assert out.column is not None
        return out.duplicate_of, out.column
