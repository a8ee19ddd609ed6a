"""Graph data sets for the expressive-power benchmarks: graph8c, CSL, EXP, SR25.

* **graph8c**: all 11117 connected non-isomorphic graphs on 8 nodes, generated here (Debian ``nauty``'s
  ``geng -c 8`` when it is on ``PATH``, otherwise a pure-Python orderly generator) and cached on disk.
* **CSL** (Murphy et al., 2019): circulant graphs ``C_41(1, s)`` for 10 skip lengths, 15 randomly
  relabelled copies each; label = skip class.
* **EXP** (Abboud et al., 2021): 1200 planar graphs in SAT/UNSAT pairs, read from the converted ``.npz`` or the
  original ``GRAPHSAT.txt`` (``equiframe data fetch exp``, :mod:`equiframe.datasets.fetch`).
* **SR25**: the 15 strongly regular graphs SRG(25, 12, 5, 6), read from a graph6 file (``equiframe data fetch sr25``).

Every loader returns a list of :class:`torch_geometric.data.Data` with ``edge_index`` (both directions,
sorted, int64), ``num_nodes``, ``x`` (float32 node features: EXP one-hot node type ``[n, 2]``, others
the constant ``[n, 1]`` ones) and ``y`` (``[1]`` int64 graph label) where the data set has labels. The
lists work with ``torch_geometric.loader.DataLoader``.

graph6 (McKay's format) is parsed and written in pure Python: :func:`parse_graph6`, :func:`to_graph6`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from ..frames.canonical import canonical_code, code_edges
from ._cache import load_or_build
from .._checks import check_int, check_tensor

__all__ = [
    "CSL_SKIPS",
    "GRAPH8C_COUNT",
    "all_pairs",
    "canonical_code",
    "connected_graphs",
    "consecutive_pairs",
    "csl_dataset",
    "edges_to_data",
    "graph8c",
    "iter_all_pairs",
    "load_exp",
    "load_graph6",
    "load_sr25",
    "parse_graph6",
    "srg_parameters",
    "to_exp_txt",
    "to_graph6",
]

#: number of connected graphs on n unlabelled nodes (OEIS A001349), n = 0..10
CONNECTED_COUNTS = (1, 1, 1, 2, 6, 21, 112, 853, 11117, 261080, 11716571)
GRAPH8C_COUNT = 11117
#: skip lengths of the CSL benchmark (class k has skip CSL_SKIPS[k])
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------------------------
# graph6
# ----------------------------------------------------------------------------------------------------


def _g6_size(data: bytes) -> tuple[int, int]:
    """Decode N(n); returns (n, number of bytes used)."""
    if not data:
        raise ValueError("graph6: empty string")
    if data[0] != 126:  # '~'
        return data[0] - 63, 1
    wide = len(data) >= 2 and data[1] == 126
    start, end = (2, 8) if wide else (1, 4)  # '~~' + 6 bytes, else '~' + 3 bytes
    if len(data) < end:
        raise ValueError("graph6: truncated size field")
    n = 0
    for b in data[start:end]:
        n = (n << 6) | (b - 63)
    return n, end


def _g6_size_bytes(n: int) -> bytes:
    """Encode N(n): 1 byte for n <= 62, '~' + 3 bytes for n <= 258047, '~~' + 6 bytes below 2**36."""
    if n <= 62:
        return bytes([n + 63])
    if n <= 258047:
        return bytes([126] + [((n >> s) & 63) + 63 for s in (12, 6, 0)])
    return bytes([126, 126] + [((n >> s) & 63) + 63 for s in (30, 24, 18, 12, 6, 0)])


def parse_graph6(line: str | bytes) -> tuple[int, list[tuple[int, int]]]:
    """Parse one graph6 string (an optional ``>>graph6<<`` header is skipped).

    graph6 stores ``N(n)`` and then the upper triangle of the adjacency matrix column by column
    (``(0,1), (0,2), (1,2), (0,3), ...``) as 6-bit groups, each written as the byte ``63 + value``.

    Returns:
        ``(n, edges)`` with every undirected edge once as ``(i, j)``, ``i < j``, in graph6 bit order.
    """
    data = line.encode("ascii") if isinstance(line, str) else bytes(line)
    data = data.strip()
    if data.startswith(b">>graph6<<"):
        data = data[len(b">>graph6<<") :]
    if data[:1] in (b":", b";"):
        raise ValueError("graph6: this is sparse6 (leading ':'), not graph6")
    if data[:1] == b"&":
        raise ValueError("graph6: this is digraph6 (leading '&'), not graph6")
    if any(b < 63 or b > 126 for b in data):
        raise ValueError(f"graph6: invalid character in {data[:40]!r}")
    n, used = _g6_size(data)
    nbits = n * (n - 1) // 2
    body = data[used:]
    need = (nbits + 5) // 6
    if len(body) != need:
        raise ValueError(f"graph6: expected {need} data bytes for n={n}, got {len(body)}")
    pad = need * 6 - nbits
    if pad and (body[-1] - 63) & ((1 << pad) - 1):
        raise ValueError(f"graph6: non-zero padding bits in the last byte (corrupted string) for n={n}")
    edges = []
    k = 0
    for j in range(1, n):
        for i in range(j):
            byte = body[k // 6] - 63
            if (byte >> (5 - k % 6)) & 1:
                edges.append((i, j))
            k += 1
    return n, edges


def to_graph6(edges: Tensor | Sequence[tuple[int, int]], num_nodes: int, *, header: bool = False) -> str:
    """Encode a simple undirected graph as graph6 (inverse of :func:`parse_graph6`).

    Args:
        edges: ``edge_index [2, E]`` (either or both directions) or a sequence of ``(i, j)`` pairs.
            Self-loops are not representable and raise ``ValueError``; duplicates are ignored.
        num_nodes: number of nodes ``n`` (``0 <= n < 2**36``).
        header: prepend ``>>graph6<<``.
    """
    n = int(num_nodes)
    if n < 0 or n >= 2**36:
        raise ValueError(f"num_nodes: expected 0 <= n < 2**36, got {n}")
    if isinstance(edges, Tensor):
        if edges.dim() != 2 or edges.shape[0] != 2:
            raise ValueError(f"edges: expected edge_index of shape [2, E], got {tuple(edges.shape)}")
        pairs = edges.t().tolist()
    else:
        pairs = [tuple(e) for e in edges]
    bits = set()
    for i, j in pairs:
        i, j = int(i), int(j)
        if not (0 <= i < n and 0 <= j < n):
            raise ValueError(f"edges: node index out of range [0, {n}): ({i}, {j})")
        if i == j:
            raise ValueError(f"edges: self-loop ({i}, {i}) cannot be written in graph6")
        a, b = min(i, j), max(i, j)
        bits.add(b * (b - 1) // 2 + a)
    out = bytearray(_g6_size_bytes(n))
    nbits = n * (n - 1) // 2
    body = bytearray((nbits + 5) // 6)
    for k in bits:
        body[k // 6] |= 1 << (5 - k % 6)
    out += bytes(b + 63 for b in body)
    return (">>graph6<<" if header else "") + out.decode("ascii")


def edges_to_data(n: int, edges: Sequence[tuple[int, int]], y: int | None = None) -> Data:
    """A PyG ``Data`` from undirected edges: ``edge_index`` in both directions (sorted), ``x = 1``.

    Shapes:
        -> edge_index ``[2, 2E]`` int64, x ``[n, 1]`` float32, y ``[1]`` int64 (if given)
    """
    check_int("n", n, 0)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if e.size and (e.min() < 0 or e.max() >= n):
        raise ValueError(f"edges: node index out of range [0, {n})")
    keys = np.unique(np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]]))  # sorted, no duplicates
    ei = torch.from_numpy(np.stack([keys // n, keys % n])) if n else torch.zeros(2, 0, dtype=torch.long)
    data = Data(edge_index=ei, num_nodes=n, x=torch.ones(n, 1))
    if y is not None:
        data.y = torch.tensor([y], dtype=torch.long)
    return data


def load_graph6(path: PathLike) -> list[Data]:
    """Read a graph6 file (one graph per line; blank lines and a ``>>graph6<<`` header are skipped).

    Returns:
        One ``Data`` per graph (``x`` = ones ``[n, 1]``, no ``y``).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no graph6 file at {p}")
    out = []
    with open(p, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                n, edges = parse_graph6(line)
            except ValueError as err:
                raise ValueError(f"{p}:{lineno}: {err}") from None
            out.append(edges_to_data(n, edges))
    return out


def srg_parameters(edge_index: Tensor, num_nodes: int) -> tuple[int, int, int, int] | None:
    """``(n, k, lambda, mu)`` if the simple undirected graph is strongly regular, else ``None``.

    Strongly regular: ``k``-regular, every two adjacent nodes have ``lambda`` common neighbours and every two
    non-adjacent ones ``mu`` (``A^2 = k I + lambda A + mu (J - I - A)``). Complete and empty graphs count
    (one of ``lambda`` / ``mu`` is then vacuous and reported as 0).
    """
    check_int("num_nodes", num_nodes, 1)
    check_tensor("edge_index", edge_index, ndim=2, integer=True)
    if edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(edge_index.shape)}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index: node indices must lie in [0, {num_nodes})")
    n = int(num_nodes)
    A = torch.zeros(n, n, dtype=torch.long)
    A[edge_index[0], edge_index[1]] = 1
    deg = A.sum(1)
    if n == 0 or not bool((deg == deg[0]).all()):
        return None
    A2 = A @ A
    off = ~torch.eye(n, dtype=torch.bool)
    lam, mu = A2[(A == 1) & off].unique(), A2[(A == 0) & off].unique()
    if lam.numel() > 1 or mu.numel() > 1:
        return None
    return n, int(deg[0]), int(lam[0]) if lam.numel() else 0, int(mu[0]) if mu.numel() else 0


def load_sr25(path: PathLike) -> list[Data]:
    """SR25: the 15 strongly regular graphs SRG(25, 12, 5, 6) from ``sr251256.g6``.

    Checked: a graph6 file of 15 graphs, every one on 25 nodes with the SRG parameters (25, 12, 5, 6);
    otherwise ``ValueError`` naming the file (:func:`load_graph6` reports malformed lines).
    """
    graphs = load_graph6(path)
    if len(graphs) != 15 or any(g.num_nodes != 25 for g in graphs):
        raise ValueError(f"path: expected 15 graphs on 25 nodes (SR25), got {len(graphs)} graphs "
                         f"with {sorted({g.num_nodes for g in graphs})} nodes in {path}")
    for i, g in enumerate(graphs):
        prm = srg_parameters(g.edge_index, g.num_nodes)
        if prm != (25, 12, 5, 6):
            raise ValueError(f"path: graph {i} of {path} is not an SRG(25, 12, 5, 6) (parameters {prm})")
    return graphs


# ----------------------------------------------------------------------------------------------------
# connected graphs (graph8c)
# ----------------------------------------------------------------------------------------------------


def _connected_codes_python(n: int) -> list[int]:
    """Canonical codes of all connected graphs on ``n`` nodes by vertex augmentation.

    Every connected graph on ``m >= 2`` nodes has a non-cut vertex (a leaf of a spanning tree), so it
    is a connected graph on ``m - 1`` nodes plus one vertex joined to a non-empty subset; generate all
    such extensions of every class and keep one per canonical code.
    """
    level = {0} if n >= 1 else set()
    for m in range(2, n + 1):
        nxt: set[int] = set()
        for code in level:
            base = code_edges(m - 1, code)
            for s in range(1, 1 << (m - 1)):
                new = base + [(i, m - 1) for i in range(m - 1) if s >> i & 1]
                nxt.add(canonical_code(m, new))
        level = nxt
    return sorted(level)


def _find_geng() -> str | None:
    return shutil.which("nauty-geng") or shutil.which("geng")


def _connected_codes_nauty(n: int, geng: str) -> list[int]:
    proc = subprocess.run([geng, "-c", "-q", str(n)], capture_output=True, check=True)
    codes = set()
    count = 0
    for line in proc.stdout.splitlines():
        if line.strip():
            m, edges = parse_graph6(line)
            codes.add(canonical_code(m, edges))
            count += 1
    if len(codes) != count:
        raise RuntimeError(f"geng returned {count} graphs but only {len(codes)} isomorphism classes")
    return sorted(codes)


def connected_graphs(
    n: int,
    *,
    method: Literal["auto", "nauty", "python"] = "auto",
    cache: bool = True,
    cache_path: PathLike | None = None,
) -> list[Data]:
    """All connected graphs on ``n`` nodes up to isomorphism, each in canonical labelling.

    The list is sorted by :func:`canonical_code`, so it is identical whichever generator made it.

    Args:
        n: number of nodes, ``1 <= n <= 10`` (``n = 9, 10`` only with nauty: 261080 / 11.7M graphs).
        method: ``"nauty"`` runs ``nauty-geng -c n`` / ``geng -c n`` (must be on ``PATH``);
            ``"python"`` the pure-Python generator (``n <= 8``; n = 8 takes about 10-20 s once, then the
            cache is used);
            ``"auto"`` nauty if found, else Python.
        cache: read/write the canonical codes (int64 ``[count]``) through the project's on-disk cache
            (:func:`equiframe.datasets._cache.load_or_build`: atomic writes, checksummed, entry
            ``connected_graphs/<key>.npz``).
        cache_path: cache root (default ``$EQUIFRAME_CACHE``, else ``~/.cache/equiframe``).

    Returns:
        ``Data`` objects with ``edge_index`` (both directions), ``num_nodes = n``, ``x`` = ones ``[n, 1]``.
    """
    if not isinstance(n, int) or n < 1 or n >= len(CONNECTED_COUNTS):
        raise ValueError(f"n: expected an int in [1, {len(CONNECTED_COUNTS) - 1}], got {n!r}")
    if method not in ("auto", "nauty", "python"):
        raise ValueError(f"method: expected 'auto', 'nauty' or 'python', got {method!r}")
    expected = CONNECTED_COUNTS[n]

    def build() -> dict[str, np.ndarray]:
        geng = _find_geng()
        if method == "nauty" and geng is None:
            raise FileNotFoundError("method: 'nauty' needs nauty-geng or geng on PATH (Debian: apt-get install nauty)")
        if method == "nauty" or (method == "auto" and geng is not None):
            codes = _connected_codes_nauty(n, geng)  # type: ignore[arg-type]
        else:
            if n > 8:
                raise ValueError(f"n: the pure-Python generator is limited to n <= 8 (got {n}); install nauty")
            codes = _connected_codes_python(n)
        if len(codes) != expected:
            raise RuntimeError(f"generated {len(codes)} connected graphs on {n} nodes, expected {expected}")
        return {"codes": np.asarray(codes, dtype=np.int64)}  # n (n - 1) / 2 <= 45 bits

    if cache:
        arrays = load_or_build("connected_graphs", {"n": n}, build, format_version=1, root=cache_path)
    else:
        arrays = build()
    codes = arrays["codes"].tolist()
    if len(codes) != expected:
        raise RuntimeError(f"cache entry for n={n} holds {len(codes)} graphs, expected {expected}; delete it")
    return [edges_to_data(n, code_edges(n, c)) for c in codes]


def graph8c(
    *,
    method: Literal["auto", "nauty", "python"] = "auto",
    cache: bool = True,
    cache_path: PathLike | None = None,
) -> list[Data]:
    """graph8c: the 11117 connected non-isomorphic graphs on 8 nodes (see :func:`connected_graphs`).

    Every pair of graphs is non-isomorphic (:func:`iter_all_pairs` enumerates the 61,788,286 pairs).
    """
    return connected_graphs(8, method=method, cache=cache, cache_path=cache_path)


# ----------------------------------------------------------------------------------------------------
# CSL, EXP
# ----------------------------------------------------------------------------------------------------


def csl_dataset(
    generator: torch.Generator | None = None,
    *,
    num_nodes: int = 41,
    skips: Sequence[int] = CSL_SKIPS,
    per_class: int = 15,
) -> list[Data]:
    """CSL: circular skip-link graphs ``C_n(1, s)`` (node ``i`` adjacent to ``i +- 1`` and ``i +- s`` mod n).

    Class ``k`` (label ``y = k``) has skip ``skips[k]``; each of its ``per_class`` graphs is the same
    circulant graph with its nodes relabelled by a uniformly random permutation drawn from
    ``generator`` (default: a fresh generator seeded with 0, so the data set is reproducible). With the
    defaults: 150 4-regular graphs on 41 nodes, classes pairwise non-isomorphic, 1-WL-indistinguishable.

    Shapes:
        -> ``Data`` with edge_index ``[2, 4n]``, x ``[n, 1]`` ones, y ``[1]``
    """
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if num_nodes < 5:
        raise ValueError(f"num_nodes: expected >= 5, got {num_nodes}")
    if per_class < 1:
        raise ValueError(f"per_class: expected >= 1, got {per_class}")
    for s in skips:
        if not 1 < s < num_nodes - 1 or 2 * s == num_nodes:
            raise ValueError(f"skips: skip {s} must satisfy 1 < s < n - 1 and 2 s != n (n = {num_nodes})")
    out = []
    for k, s in enumerate(skips):
        i = torch.arange(num_nodes)
        base = torch.cat([torch.stack([i, (i + 1) % num_nodes]), torch.stack([i, (i + s) % num_nodes])], dim=1)
        for _ in range(per_class):
            perm = torch.randperm(num_nodes, generator=generator, device=generator.device).cpu()
            e = perm[base]
            ei = torch.unique(torch.cat([e, e.flip(0)], dim=1), dim=1)
            out.append(Data(edge_index=ei, num_nodes=num_nodes, x=torch.ones(num_nodes, 1), y=torch.tensor([k])))
    return out


def _exp_graph(g: int, n: int, types: np.ndarray, ei: np.ndarray, y: int, where: str) -> Data:
    """One EXP graph, checked: node types 0/1, label 0/1, ids in range, undirected, simple."""
    if types.size and (types.min() < 0 or types.max() > 1):
        raise ValueError(f"{where}: graph {g} has node types outside {{0, 1}}")
    if y not in (0, 1):
        raise ValueError(f"{where}: graph {g} has label {y}, expected 0 (UNSAT) or 1 (SAT)")
    if ei.size and (ei.min() < 0 or ei.max() >= n):
        raise ValueError(f"{where}: graph {g} has node ids outside [0, {n})")
    if ei.size and bool((ei[0] == ei[1]).any()):
        raise ValueError(f"{where}: graph {g} has a self-loop")
    fwd = ei[0] * max(n, 1) + ei[1]
    if np.unique(fwd).size != fwd.size:
        raise ValueError(f"{where}: graph {g} has duplicate edges")
    if not np.array_equal(np.sort(fwd), np.sort(ei[1] * max(n, 1) + ei[0])):
        raise ValueError(f"{where}: graph {g} is not undirected (an edge lacks its reverse)")
    t = torch.from_numpy(types.astype(np.int64))
    return Data(edge_index=torch.from_numpy(ei.astype(np.int64)), num_nodes=n,
                x=torch.nn.functional.one_hot(t, 2).float(), node_type=t, y=torch.tensor([y]))


def _read_exp_npz(p: Path) -> list[Data]:
    import zipfile  # noqa: PLC0415

    where = f"path: {p}"
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("node_ptr", "x", "edge_ptr", "edge_index", "y") if k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError) as err:
        raise ValueError(f"{where} is not a readable .npz file of integer arrays (truncated, corrupted or "
                         f"pickled objects?): {err}") from None
    missing = {"node_ptr", "x", "edge_ptr", "edge_index", "y"} - set(arrays)
    if missing:
        raise ValueError(f"{where} lacks arrays {sorted(missing)}")
    for k, v in arrays.items():
        if v.dtype.kind not in "iu":
            raise ValueError(f"{where}: array {k!r} has dtype {v.dtype}, expected integers")
    node_ptr, x, edge_ptr = (arrays[k].astype(np.int64) for k in ("node_ptr", "x", "edge_ptr"))
    edge_index, y = arrays["edge_index"].astype(np.int64), arrays["y"].astype(np.int64)
    G = y.shape[0] if y.ndim == 1 else -1
    if G < 0 or node_ptr.shape != (G + 1,) or edge_ptr.shape != (G + 1,) or x.ndim != 1 or edge_index.ndim != 2 \
            or edge_index.shape[0] != 2:
        raise ValueError(f"{where}: inconsistent array shapes (y {y.shape}, node_ptr {node_ptr.shape}, edge_ptr "
                         f"{edge_ptr.shape}, x {x.shape}, edge_index {edge_index.shape})")
    for name, ptr, total in (("node_ptr", node_ptr, x.shape[0]), ("edge_ptr", edge_ptr, edge_index.shape[1])):
        if ptr[0] != 0 or bool((np.diff(ptr) < 0).any()) or ptr[-1] != total:
            raise ValueError(f"{where}: {name} must rise from 0 to {total} (the length of its array)")
    return [_exp_graph(g, int(node_ptr[g + 1] - node_ptr[g]), x[node_ptr[g]: node_ptr[g + 1]],
                       edge_index[:, edge_ptr[g]: edge_ptr[g + 1]], int(y[g]), where) for g in range(G)]


def _read_exp_txt(p: Path) -> list[Data]:
    """The text format of the GNN-RNI repository (that of PPGN's benchmark graphs)."""
    try:
        lines = p.read_text(encoding="ascii").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"path: {p} is not an ASCII text file: {err}") from None
    pos = 0

    def ints(expect: str) -> list[int]:
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            raise ValueError(f"path: {p}: the file ends early (expected {expect})")
        pos += 1
        try:
            return [int(t) for t in lines[pos - 1].split()]
        except ValueError:
            raise ValueError(f"path: {p}:{pos}: expected integers ({expect}), got {lines[pos - 1][:60]!r}") from None

    head = ints("the number of graphs")
    if len(head) != 1 or head[0] < 0:
        raise ValueError(f"path: {p}:{pos}: expected the number of graphs on the first line")
    out = []
    for g in range(head[0]):
        hdr = ints(f"'n label' of graph {g}")
        if len(hdr) != 2 or hdr[0] < 0:
            raise ValueError(f"path: {p}:{pos}: expected 'n label' for graph {g}, got {hdr}")
        n, label = hdr
        types, src, dst = np.zeros(n, dtype=np.int64), [], []
        for v in range(n):
            row = ints(f"node {v} of graph {g}")
            if len(row) < 2 or row[1] != len(row) - 2:
                raise ValueError(f"path: {p}:{pos}: node {v} of graph {g}: expected 'type degree' and degree "
                                 f"neighbours, got {row[:8]}")
            types[v] = row[0]
            src += [v] * row[1]
            dst += row[2:]
        ei = np.array([src, dst], dtype=np.int64).reshape(2, -1)
        out.append(_exp_graph(g, n, types, ei[:, np.lexsort((ei[1], ei[0]))], label, f"path: {p}"))
    if any(line.strip() for line in lines[pos:]):
        raise ValueError(f"path: {p}:{pos + 1}: unexpected data after the {head[0]} graphs the header announces")
    return out


def _check_exp_pairs(graphs: list[Data], p: Path) -> None:
    if len(graphs) % 2:
        raise ValueError(f"path: {p} holds {len(graphs)} graphs; EXP comes in pairs (2k, 2k+1)")
    for k in range(0, len(graphs), 2):
        a, b = graphs[k], graphs[k + 1]
        if a.num_nodes != b.num_nodes or a.edge_index.shape[1] != b.edge_index.shape[1] or int(a.y) == int(b.y):
            raise ValueError(f"path: {p}: graphs {k} and {k + 1} are not an EXP pair (equal node and edge counts, "
                             f"one SAT and one UNSAT)")


def load_exp(path: PathLike, *, check_pairs: bool = True) -> list[Data]:
    """EXP (Abboud et al., 2021): 1-WL-equivalent SAT / UNSAT pairs of planar formula graphs.

    Two formats, told apart by their content:

    * the converted NumPy file ``exp_graphsat.npz`` (read with ``allow_pickle=False``): ``node_ptr`` [G+1],
      ``x`` [N] node type (0/1), ``edge_ptr`` [G+1], ``edge_index`` [2, E] (both directions, node ids local
      to their graph), ``y`` [G] (1 = SAT);
    * the original text release ``GRAPHSAT.txt`` of the GNN-RNI repository: the number of graphs, then per
      graph a line ``n label`` and ``n`` lines ``type degree neighbour...``.

    The pickled ``GRAPHSAT.pkl`` is never read (unpickling runs code from the file). Everything is checked:
    array kinds and shapes, pointers, node ids, node types and labels in ``{0, 1}``, undirected simple
    graphs, and the pairing (graphs ``2k`` and ``2k + 1`` have equal node and edge counts and opposite
    labels; :func:`consecutive_pairs`). A malformed file raises ``ValueError`` naming it.

    Args:
        path: the ``.npz`` or ``.txt`` file.
        check_pairs: check the EXP pairing (``False`` for other data sets in these formats).

    Returns:
        ``Data`` with ``x`` = one-hot node type ``[n, 2]`` float32, ``node_type`` ``[n]`` int64,
        ``edge_index`` int64 (both directions), ``y`` ``[1]`` int64.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no EXP file at {p}")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    graphs = _read_exp_npz(p) if magic.startswith(b"PK") else _read_exp_txt(p)
    if check_pairs:
        _check_exp_pairs(graphs, p)
    return graphs


def to_exp_txt(graphs: Sequence[Data]) -> str:
    """Write EXP graphs (``node_type`` or one-hot ``x``, ``y``) in the GNN-RNI text format (see :func:`load_exp`)."""
    for i, g in enumerate(graphs):
        if getattr(g, "edge_index", None) is None or getattr(g, "y", None) is None or getattr(g, "num_nodes", None) is None:
            raise ValueError(f"graphs: item {i} is not a graph with edge_index, y and node types ({type(g).__name__})")
    out = [str(len(graphs))]
    for g in graphs:
        n = int(g.num_nodes)
        t = g.node_type if getattr(g, "node_type", None) is not None else g.x.argmax(1)
        out.append(f"{n} {int(g.y)}")
        nb: list[list[int]] = [[] for _ in range(n)]
        for u, v in g.edge_index.t().tolist():
            nb[u].append(v)
        out += [" ".join(map(str, [int(t[v]), len(nb[v])] + nb[v])) for v in range(n)]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------------
# pairs
# ----------------------------------------------------------------------------------------------------


def consecutive_pairs(num_graphs: int) -> Tensor:
    """The pairs ``(2k, 2k + 1)`` (EXP), ``[num_graphs // 2, 2]`` int64."""
    check_int("num_graphs", num_graphs, 0)
    if num_graphs < 0:
        raise ValueError(f"num_graphs: expected >= 0, got {num_graphs}")
    return torch.arange(2 * (num_graphs // 2)).reshape(-1, 2)


def all_pairs(num_graphs: int) -> Tensor:
    """All unordered pairs ``(i, j)``, ``i < j``, row-major, ``[n (n - 1) / 2, 2]`` int64.

    For graph8c this is 61,788,286 pairs (about 1 GB); use :func:`iter_all_pairs` there.
    """
    check_int("num_graphs", num_graphs, 0)
    if num_graphs < 0:
        raise ValueError(f"num_graphs: expected >= 0, got {num_graphs}")
    return torch.triu_indices(num_graphs, num_graphs, offset=1).t().contiguous()


def iter_all_pairs(num_graphs: int, chunk_size: int = 1 << 20) -> Iterator[Tensor]:
    """All pairs ``(i, j)``, ``i < j``, in the order of :func:`all_pairs`, in chunks of about ``chunk_size``.

    Yields:
        ``[c, 2]`` int64 tensors (whole rows ``i``; a row longer than ``chunk_size`` is split).
    """
    check_int("num_graphs", num_graphs, 0)
    check_int("chunk_size", chunk_size, 1)
    if num_graphs < 0:
        raise ValueError(f"num_graphs: expected >= 0, got {num_graphs}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    i = 0
    while i < num_graphs - 1:
        rows, total = [], 0
        while i < num_graphs - 1 and (total == 0 or total + (num_graphs - 1 - i) <= chunk_size):
            j = torch.arange(i + 1, num_graphs)
            rows.append(torch.stack([torch.full_like(j, i), j], dim=1))
            total += j.numel()
            i += 1
        block = torch.cat(rows)
        yield from block.split(chunk_size)
