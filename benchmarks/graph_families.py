"""Highly symmetric graph families for the canonical-labelling tests and benchmark.

Every generator returns ``(edge_index [2, 2E] int64 (both directions), n)``. ``FAMILIES`` maps a family to its
members and their strongly regular parameters ``(n, k, lambda, mu)`` (``None``: not strongly regular).
"""

import itertools
from pathlib import Path

import torch

from equiframe.datasets.graphs import load_sr25
from equiframe.datasets.graphs import srg_parameters as _srg_parameters

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _graph(n, pairs):
    """``(edge_index [2, 2E], n)`` from undirected pairs (deduplicated)."""
    s = sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})
    e = torch.tensor(s, dtype=torch.long).reshape(-1, 2).T
    return torch.cat([e, e.flip(0)], 1), n


def triangular(m):
    """T(m) = line graph of K_m: SRG(m(m-1)/2, 2(m-2), m-2, 4)."""
    V = list(itertools.combinations(range(m), 2))
    return _graph(len(V), [(a, b) for a, b in itertools.combinations(range(len(V)), 2) if set(V[a]) & set(V[b])])


def seidel_switch(graph, S):
    """Seidel switching of a graph w.r.t. the vertex set ``S`` (toggle every pair with one end in S)."""
    ei, n = graph
    A = torch.zeros(n, n, dtype=torch.bool)
    A[ei[0], ei[1]] = True
    m = torch.zeros(n, dtype=torch.bool)
    m[list(S)] = True
    cross = m[:, None] ^ m[None, :]
    A = A ^ cross
    return _graph(n, A.nonzero().tolist())


def chang_graphs():
    """The three Chang graphs: T(8) switched w.r.t. the edges of 4 disjoint edges, C_3 + C_5 and C_8 of K_8."""
    V = {e: i for i, e in enumerate(itertools.combinations(range(8), 2))}
    sets = [[(0, 1), (2, 3), (4, 5), (6, 7)],
            [(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (5, 6), (6, 7), (3, 7)],
            [(i, (i + 1) % 8) for i in range(8)]]
    return [seidel_switch(triangular(8), [V[(min(a, b), max(a, b))] for a, b in s]) for s in sets]


def paley(q):
    sq = {(x * x) % q for x in range(1, q)}
    return _graph(q, [(i, j) for i in range(q) for j in range(i + 1, q) if (j - i) % q in sq])


def rook(m):
    """The Latin-square graph L_2(m) = K_m x K_m (rook's graph): SRG(m^2, 2(m-1), m-2, 2)."""
    return _graph(m * m, [(a, b) for a, b in itertools.combinations(range(m * m), 2)
                          if a // m == b // m or a % m == b % m])


def kneser(m, k):
    V = list(itertools.combinations(range(m), k))
    return _graph(len(V), [(a, b) for a, b in itertools.combinations(range(len(V)), 2) if not set(V[a]) & set(V[b])])


def hypercube(d):
    return _graph(2**d, [(a, a ^ (1 << i)) for a in range(2**d) for i in range(d)])


def clebsch():
    """Folded 5-cube: 4-bit words adjacent if they differ in one bit or in all four: SRG(16, 5, 0, 2)."""
    return _graph(16, [(a, b) for a, b in itertools.combinations(range(16), 2) if bin(a ^ b).count("1") in (1, 4)])


def shrikhande():
    """Cayley graph of Z_4 x Z_4 with connection set {+-(1,0), +-(0,1), +-(1,1)}: SRG(16, 6, 2, 2)."""
    gens = [(1, 0), (3, 0), (0, 1), (0, 3), (1, 1), (3, 3)]
    return _graph(16, [(4 * a + b, 4 * ((a + da) % 4) + (b + db) % 4) for a in range(4) for b in range(4)
                       for da, db in gens])


def sr25():
    path = SHARED_DATA / "sr251256.g6"
    if not path.is_file():
        return []
    return [(g.edge_index, g.num_nodes) for g in load_sr25(path)]


def srg_parameters(graph):
    """``(n, k, lambda, mu)`` if the graph is strongly regular, else ``None``."""
    return _srg_parameters(*graph)


FAMILIES = {
    "triangular": ([triangular(m) for m in (5, 6, 7, 8, 9)], [(10, 6, 3, 4), (15, 8, 4, 4), (21, 10, 5, 4),
                                                               (28, 12, 6, 4), (36, 14, 7, 4)]),
    "chang": (chang_graphs(), [(28, 12, 6, 4)] * 3),
    "paley": ([paley(q) for q in (13, 17, 29, 37, 41)], [(q, (q - 1) // 2, (q - 5) // 4, (q - 1) // 4)
                                                        for q in (13, 17, 29, 37, 41)]),
    "latin_square": ([rook(m) for m in (3, 4, 5, 6)], [(m * m, 2 * (m - 1), m - 2, 2) for m in (3, 4, 5, 6)]),
    "small_srg": ([kneser(5, 2), clebsch(), shrikhande()], [(10, 3, 0, 1), (16, 5, 0, 2), (16, 6, 2, 2)]),
    "kneser": ([kneser(6, 2), kneser(7, 2), kneser(7, 3)], [(15, 6, 1, 3), (21, 10, 3, 6), None]),
    "hypercube": ([hypercube(d) for d in (3, 4, 5)], [None, None, None]),
}
