"""Where EXP's cores are: an analysis of the EXP data set (used by ``bench_exp_placement.py``).

EXP pairs ``(2k, 2k+1)`` are a 1-WL-equivalent SAT / UNSAT pair of formula graphs plus further connected
components that both graphs share. :func:`exp_cores` finds, exactly (canonical labelling), the one component
of every graph that its partner lacks. A study of the data set rather than library code, so it lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from equiframe.frames.canonical import canonical_keys
from equiframe.frames.graph import connected_components

__all__ = ["ExpCores", "exp_cores"]


@dataclass(frozen=True)
class ExpCores:
    """The pair structure of EXP (:func:`exp_cores`).

    Attributes:
        core: per graph, a bool mask ``[n]`` of the nodes of its *core* component.
        core_class: ``[G]`` isomorphism class of every graph's core (with node types), numbered in order of
            first appearance.
        num_classes: number of distinct cores.
    """

    core: list[Tensor]
    core_class: Tensor
    num_classes: int


def exp_cores(graphs: Sequence[Any], max_states: int = 20_000) -> ExpCores:
    """Split every EXP graph into its *core* and the rest, from the pair structure of the data set.

    EXP pairs ``(2k, 2k+1)`` (Abboud et al., 2021) are a 1-WL-equivalent SAT / UNSAT pair of formula graphs
    plus further connected components that both graphs of the pair share. The core of a graph is the one
    connected component (with its node types) that has no isomorphic partner among the components of the
    other graph of its pair. Isomorphism is decided exactly by canonical labelling
    (:func:`~equiframe.frames.canonical.canonical_keys` certificates, node types as initial colours).

    On the published file the 1200 cores fall into 6 classes (SAT and UNSAT cores of 16, 24 and 32 nodes),
    each class with one label: what separates the classes is the core, placed among varying other
    components.

    Raises:
        ValueError: odd number of graphs, a canonical search over budget, or a pair that does not differ in
            exactly one component per graph.
    """
    from torch_geometric.data import Batch, Data  # noqa: PLC0415
    from torch_geometric.utils import subgraph  # noqa: PLC0415


    if len(graphs) % 2:
        raise ValueError(f"graphs: expected EXP pairs (an even number of graphs), got {len(graphs)}")
    comp_of: list[Tensor] = []
    parts: list[Any] = []  # every component as a graph of its own
    for g in graphs:
        n = int(g.num_nodes)
        lab = torch.unique(connected_components(g.edge_index, n), return_inverse=True)[1]  # components 0..k-1
        comp_of.append(lab)
        types = g.x.argmax(1) if g.x.dim() == 2 else g.x
        for c in range(int(lab.max()) + 1):
            mask = lab == c
            edges = subgraph(mask, g.edge_index, relabel_nodes=True, num_nodes=n)[0]
            parts.append(Data(edge_index=edges, x=types[mask].long(), num_nodes=int(mask.sum())))
    forms: list[tuple] = [()] * len(parts)
    by_size: dict[int, list[int]] = {}
    for i, p in enumerate(parts):  # one call per size: certificate rows of one width
        by_size.setdefault(int(p.num_nodes), []).append(i)
    for idx in by_size.values():
        b = Batch.from_data_list([parts[i] for i in idx])
        lab = canonical_keys(b.edge_index, batch=b.batch, x=b.x, max_states=max_states, on_budget="ignore")
        if not bool(lab.ok.all()):
            raise ValueError("exp_cores: canonical search over budget; raise max_states")
        for j, i in enumerate(idx):
            keys, x = lab.keys[b.ptr[j] : b.ptr[j + 1]], b.x[b.ptr[j] : b.ptr[j + 1]]
            typed = torch.empty_like(x)
            typed[keys] = x  # node types in canonical order
            forms[i] = (len(keys), tuple(lab.certificate[j].tolist()), tuple(typed.tolist()))
    start = [0]
    for lab in comp_of:
        start.append(start[-1] + int(lab.max()) + 1)
    core: list[Tensor] = []
    classes: dict[tuple, int] = {}
    core_class = []
    for k in range(0, len(graphs), 2):
        for a, b in ((k, k + 1), (k + 1, k)):
            mine, theirs = forms[start[a] : start[a + 1]], list(forms[start[b] : start[b + 1]])
            unmatched = []
            for c, f in enumerate(mine):
                if f in theirs:
                    theirs.remove(f)
                else:
                    unmatched.append(c)
            if len(unmatched) != 1:
                raise ValueError(f"exp_cores: graphs {k} and {k + 1} differ in {len(unmatched)} components of graph "
                                 f"{a}, expected 1 (not EXP pairs?)")
            core.append(comp_of[a] == unmatched[0])
            core_class.append(classes.setdefault(mine[unmatched[0]], len(classes)))
    return ExpCores(core=core, core_class=torch.tensor(core_class), num_classes=len(classes))
