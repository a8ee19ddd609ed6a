"""The component frame of a graph: connected components, and a frame whose components come in random order.

See :func:`shuffle_components` for the frame ``F_c(G)`` and why it is an S_n frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .graph import PermutationFrame, _check_index
from .._checks import check_instance

__all__ = ["connected_components", "shuffle_components"]


def connected_components(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Connected-component label of every node (the smallest node index of its component), ``[N]`` int64.

    Min-label propagation over the undirected edges with pointer jumping; stays on the device of
    ``edge_index``. Components never cross graphs of a PyG batch (edges do not), so this labels a batch too.
    """
    _check_index("edge_index", edge_index)
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(edge_index.shape)}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 0:
        raise ValueError(f"num_nodes: expected a non-negative integer, got {num_nodes!r}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise ValueError(f"edge_index: node indices must lie in [0, {num_nodes})")
    lab = torch.arange(num_nodes, device=edge_index.device)
    if edge_index.numel() == 0:
        return lab
    src, dst = edge_index[0].long(), edge_index[1].long()
    while True:
        new = lab.scatter_reduce(0, dst, lab[src], "amin").scatter_reduce(0, src, lab[dst], "amin")
        new = new[new]  # pointer jumping: follow labels to their labels' labels
        if torch.equal(new, lab):
            return lab
        lab = new


def shuffle_components(
    frame: PermutationFrame, edge_index: Tensor, generator: torch.Generator | None = None
) -> PermutationFrame:
    """The frame with every graph's connected components in a uniformly random order.

    The spectral keys start with the eigenvalue-0 column, ``1/sqrt(component size)``, so a frame lists the
    connected components of a disconnected graph by decreasing size and a component's position depends on
    the others. For a backbone that reads positions (an MLP on the frame-ordered adjacency) that ties what it
    learns about a component to the positions it happened to occupy in training. The *component frame*

        F_c(G) = { components in any order, each component's nodes in an order of its tied blocks },

    (each component's tied blocks are those of ``F(G)`` cut to the component) is an S_n frame as well:
    relabelling maps components to components, so ``F_c(P G) = P F_c(G)``. It contains ``F(G)`` whenever no
    tied block of ``F(G)`` spans two components (components of different sizes always fall in different
    blocks; equal-size ones can tie and interleave in ``F(G)``, never in ``F_c(G)``). This returns one draw
    of its component order: the components of every graph in uniformly random order (relative order of each
    component's nodes kept) and the tied blocks cut at component boundaries, so uniform within-block
    sampling from the result (:func:`frame_elements`) samples ``F_c(G)`` uniformly. Used as training
    augmentation (``FrameAveraging(..., components="shuffled")``); evaluation keeps ``F(G)``, so the
    evaluated model is exactly invariant whatever the training orders were. Connected graphs are returned
    unchanged.

    Shapes:
        frame over ``N`` nodes, edge_index ``[2, E]`` -> frame over ``N`` nodes
    """
    check_instance("frame", frame, PermutationFrame)
    N = frame.num_nodes
    if N == 0:
        return frame
    comp = connected_components(edge_index, N)
    ids, comp = torch.unique(comp, return_inverse=True)
    rank = torch.rand(ids.numel(), generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else torch.device("cpu")).to(frame.order.device)
    o = frame.order
    graph = frame.position_graph()
    # by graph, then by the random rank of the component; stable: each component keeps its relative order
    perm = torch.sort(rank[comp[o]], stable=True).indices
    perm = perm[torch.sort(graph[perm], stable=True).indices]
    order, old_block, c = o[perm], frame.block[perm], comp[o[perm]]
    start = torch.ones(N, dtype=torch.long, device=o.device)
    start[1:] = ((old_block[1:] != old_block[:-1]) | (c[1:] != c[:-1])).long()
    return PermutationFrame(order=order, block=torch.cumsum(start, 0) - 1, ptr=frame.ptr)
