"""Fill-reducing orderings of the variable-block graph (numpy only, analyze time).

All functions take the symmetric block adjacency in CSR form (``indptr``,
``indices``; no self loops, no duplicates) and return ``perm`` with
``perm[new] = old``.
"""

from __future__ import annotations

import heapq

import numpy as np


def adjacency_csr(n: int, rows: np.ndarray, cols: np.ndarray):
    """Symmetric CSR adjacency of the block graph (duplicates and i == j removed)."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    i = np.concatenate([rows, cols])
    j = np.concatenate([cols, rows])
    keep = i != j
    key = np.unique(i[keep] * n + j[keep])
    i = key // n
    j = key % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(i, minlength=n), out=indptr[1:])
    return indptr, j.astype(np.int64)


def _neighbors(indptr, indices, frontier):
    """Concatenated neighbour lists of the nodes in ``frontier``."""
    starts = indptr[frontier]
    lens = indptr[frontier + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offs = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return indices[offs + np.arange(total)]


class _Dissector:
    """Nested dissection with BFS level-structure separators.

    A subgraph is split at the BFS level (from a pseudo-peripheral node) that is
    smallest among the levels leaving both sides with at least ``balance`` of
    the nodes; nodes of that level with no neighbour beyond it are moved to the
    near side, which keeps the separator minimal for the chosen level.
    Components are ordered independently; pieces of at most ``leaf_size`` nodes
    keep their BFS order (the supernode amalgamation later treats them as dense).
    """

    def __init__(self, n, indptr, indices, leaf_size, balance=0.3):
        self.n = n
        self.indptr = indptr
        self.indices = indices
        self.leaf_size = max(1, int(leaf_size))
        self.balance = balance
        self.label = np.zeros(n, dtype=np.int64)
        self.level = np.full(n, -1, dtype=np.int64)
        self.next_label = 1
        self.degree = np.diff(indptr)

    def _bfs(self, start, lab):
        """BFS levels inside the subgraph labelled ``lab`` (list of arrays)."""
        levels = [np.array([start], dtype=np.int64)]
        self.level[start] = 0
        frontier = levels[0]
        k = 0
        while True:
            nb = _neighbors(self.indptr, self.indices, frontier)
            nb = nb[(self.label[nb] == lab) & (self.level[nb] < 0)]
            if nb.size == 0:
                break
            nb = np.unique(nb)
            k += 1
            self.level[nb] = k
            levels.append(nb)
            frontier = nb
        return levels

    def _reset(self, levels):
        for lv in levels:
            self.level[lv] = -1

    def _components(self, nodes, lab):
        """Connected components of the subgraph labelled ``lab``."""
        comps, collected = [], []
        visited, pos = 0, 0
        while visited < nodes.size:
            while self.level[nodes[pos]] >= 0:
                pos += 1
            levels = self._bfs(nodes[pos], lab)
            collected.append(levels)
            comps.append(np.concatenate(levels))
            visited += comps[-1].size
        for levels in collected:
            self._reset(levels)
        return comps

    def _pseudo_peripheral(self, nodes, lab):
        start = nodes[np.argmin(self.degree[nodes])]
        levels = self._bfs(start, lab)
        for _ in range(4):
            last = levels[-1]
            cand = last[np.argmin(self.degree[last])]
            self._reset(levels)
            new_levels = self._bfs(cand, lab)
            if len(new_levels) <= len(levels):
                self._reset(new_levels)
                levels = self._bfs(start, lab)
                break
            levels = new_levels
            start = cand
        return levels

    def order(self):
        out = []
        all_nodes = np.arange(self.n, dtype=np.int64)
        # explicit stack: (nodes, label, is_separator_output)
        stack = [("split", all_nodes, 0)]
        while stack:
            kind, nodes, lab = stack.pop()
            if kind == "emit":
                out.append(nodes)
                continue
            if nodes.size <= self.leaf_size:
                out.append(nodes)
                continue
            comps = self._components(nodes, lab)
            if len(comps) > 1:
                # push in reverse so the first component is ordered first
                for comp in reversed(comps):
                    nl = self.next_label
                    self.next_label += 1
                    self.label[comp] = nl
                    stack.append(("split", comp, nl))
                continue
            levels = self._pseudo_peripheral(nodes, lab)
            self._reset(levels)
            nlev = len(levels)
            if nlev < 3:
                out.append(np.concatenate(levels))
                continue
            sizes = np.array([lv.size for lv in levels])
            before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            after = nodes.size - before - sizes
            k_choice = None
            for bal in (self.balance, 0.15, 0.0):
                ok = np.nonzero((before >= bal * nodes.size) & (after >= bal * nodes.size)
                                & (before > 0) & (after > 0))[0]
                if ok.size:
                    k_choice = ok[np.argmin(sizes[ok])]
                    break
            if k_choice is None:
                out.append(np.concatenate(levels))
                continue
            sep_level = levels[k_choice]
            beyond = set(np.concatenate(levels[k_choice + 1:]).tolist())
            has_far = np.array(
                [bool(beyond.intersection(self.indices[self.indptr[v]:self.indptr[v + 1]].tolist()))
                 for v in sep_level], dtype=bool)
            sep = sep_level[has_far]
            near = np.concatenate(levels[:k_choice] + [sep_level[~has_far]])
            far = np.concatenate(levels[k_choice + 1:])
            la, lb = self.next_label, self.next_label + 1
            self.next_label += 2
            self.label[near] = la
            self.label[far] = lb
            self.label[sep] = -1  # separators leave every subgraph
            stack.append(("emit", sep, -1))
            stack.append(("split", far, lb))
            stack.append(("split", near, la))
        perm = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        return perm


def nested_dissection(n, indptr, indices, leaf_size=8):
    """Nested-dissection ordering (``perm[new] = old``)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    perm = _Dissector(n, indptr, indices, leaf_size).order()
    assert perm.size == n and np.unique(perm).size == n
    return perm.astype(np.int64)


def minimum_degree(n, indptr, indices):
    """Minimum-degree ordering on the explicit elimination graph.

    Eliminating a node joins its remaining neighbours into a clique; the node
    with the fewest remaining neighbours is eliminated next (ties: lowest id).
    Exact degrees, no approximation; fine for the block graphs of pose graphs
    (tens of thousands of blocks), whose fill stays modest.
    """
    adj = [set(indices[indptr[v]:indptr[v + 1]].tolist()) for v in range(n)]
    heap = [(len(adj[v]), v) for v in range(n)]
    heapq.heapify(heap)
    done = np.zeros(n, dtype=bool)
    perm = []
    while heap:
        deg, v = heapq.heappop(heap)
        if done[v] or deg != len(adj[v]):
            continue
        done[v] = True
        perm.append(v)
        nb = adj[v]
        for u in nb:
            au = adj[u]
            au.discard(v)
            au |= nb
            au.discard(u)
            heapq.heappush(heap, (len(au), u))
        adj[v] = set()
    return np.asarray(perm, dtype=np.int64)


def natural(n, indptr, indices):
    return np.arange(n, dtype=np.int64)
