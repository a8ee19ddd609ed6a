r"""Frame Averaging: make any backbone invariant or equivariant (Puny et al., ICLR 2022).

.. math::
    \langle\Phi\rangle(X) = \sum_{g \in F(X)} w_g\, \rho_{\text{out}}(g)\, \Phi(g^{-1} \cdot X)

With an equivariant frame ``F(gX) = g F(X)`` the average is exactly invariant (scalar outputs) or
equivariant (typed outputs), whatever the backbone ``Phi``. A frame element ``(R, t)`` (rows of
``R`` = axes) is the group element ``g = (R^T, t)``, so ``g^{-1} x = R (x - t)`` are the local
coordinates the backbone sees and ``rho(g) y = R^T y`` (``+ t`` for positions) maps its outputs back.

The frame copies are folded into the batch dimension, so the backbone runs **once** on
``|F| * B`` examples: dense inputs become ``[M, N, ...]`` (``M = sum_b |F_b|``), ragged PyG inputs get a
batch vector over ``M`` graphs and an ``edge_index`` replicated with offsets.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Mapping

import torch
from torch import Tensor, nn

from .frames.base import Frame
from .frames.pca import Tolerances, pca_frame
from .groups import EuclideanGroup
from .reps import TensorReps

__all__ = ["FrameAveraging", "SCALAR", "node_ranks"]

SCALAR = "scalar"
"""Type of invariant inputs/outputs of any shape (replicated / averaged, never transformed)."""

TypeSpec = "str | TensorReps"


def _resolve(spec: Any, dim: int, name: str) -> "TensorReps | str":
    if isinstance(spec, TensorReps):
        if spec.dim != dim:
            raise ValueError(f"{name}: reps {spec!r} has dim {spec.dim}, but the data has dim {dim}")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"{name}: expected a reps string, 'pos' or 'scalar', got {type(spec).__name__}")
    if spec.strip() in (SCALAR, "invariant"):
        return SCALAR
    try:
        return TensorReps(spec, dim=dim)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: {err}") from None


def _is_data(obj: Any) -> bool:
    return hasattr(obj, "to_dict") and hasattr(obj, "keys") and hasattr(obj, "edge_index")


def _weighted_sum(values: Tensor, index: Tensor, weight: Tensor, num_examples: int) -> Tensor:
    """``out[b] = sum_{m: index[m] = b} weight[m] * values[m]`` (a reshape-sum when copies are uniform)."""
    v = values * weight.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))
    M = values.shape[0]
    if num_examples and M % num_examples == 0:
        k = M // num_examples
        if bool((index == torch.arange(num_examples, device=index.device).repeat_interleave(k)).all()):
            return v.reshape(num_examples, k, *values.shape[1:]).sum(1)
    return values.new_zeros(num_examples, *values.shape[1:]).index_add_(0, index, v)


class _Fold:
    """Index bookkeeping of one forward pass: maps the original batch to the folded one.

    Copy ``m`` of the folded batch belongs to example ``index[m]`` and has averaging weight
    ``weight[m]``. Ragged batches: folded node ``u`` is original node ``node_src[u]`` and belongs to
    copy ``new_batch[u]``; folded edge ``e`` copies original edge ``edge_src[e]`` in copy ``edge_copy[e]``.
    Euclidean frames keep the node order of each example (``frame`` holds the rotations); permutation
    frames put the nodes of each copy in frame order.
    """

    frame: "Frame | None" = None
    k: "int | None" = None  # common frame size (dense Euclidean folds), enables the fused matmul path

    def __init__(self, index: Tensor, weight: Tensor, num_examples: int):
        self.index = index
        self.weight = weight
        self.M = index.shape[0]
        self.B = num_examples
        self.dense = False
        self.example_t = None
        self.edge_index = None

    @classmethod
    def euclidean(cls, frame: Frame, *, dense: bool, batch: Tensor | None, edge_index: Tensor | None) -> "_Fold":
        fold = cls(frame.index, frame.weight, frame.num_examples)
        fold.frame = frame
        fold.dense = dense
        if dense:
            fold.example_t = frame.example_translation()
            fold.k = frame.uniform_size
            return fold
        device = frame.R.device
        counts = torch.bincount(batch, minlength=fold.B)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        fold.N = batch.shape[0]
        # node copies: element m (of example b) gets the nodes ptr[b]..ptr[b+1], in their order
        rep_counts = counts[frame.index]  # [M]
        fold.new_batch = torch.arange(fold.M, device=device).repeat_interleave(rep_counts)
        fold.new_ptr = torch.cat([rep_counts.new_zeros(1), rep_counts.cumsum(0)])
        offset_in_copy = torch.arange(fold.new_batch.shape[0], device=device) - fold.new_ptr[fold.new_batch]
        fold.node_src = ptr[frame.index][fold.new_batch] + offset_in_copy  # [N_rep]
        if edge_index is not None:
            _check_edges(edge_index, batch, fold.N)
            e_graph = batch[edge_index[0]]
            perm = torch.argsort(e_graph, stable=True)
            e_counts = torch.bincount(e_graph, minlength=fold.B)
            e_ptr = torch.cat([e_counts.new_zeros(1), e_counts.cumsum(0)])
            rep_e = e_counts[frame.index]
            e_copy = torch.arange(fold.M, device=device).repeat_interleave(rep_e)
            e_new_ptr = torch.cat([rep_e.new_zeros(1), rep_e.cumsum(0)])
            e_off = torch.arange(e_copy.shape[0], device=device) - e_new_ptr[e_copy]
            fold.edge_src = perm[e_ptr[frame.index][e_copy] + e_off]  # original edge of each copy
            shift = fold.new_ptr[e_copy] - ptr[frame.index][e_copy]
            fold.edge_index = edge_index[:, fold.edge_src] + shift[None, :]
            fold.edge_copy = e_copy
            fold.num_edges = edge_index.shape[1]
        return fold

    @classmethod
    def permutation(cls, elements, *, batch: Tensor, edge_index: Tensor | None, num_examples: int) -> "_Fold":
        from .frames.graph import fold_edge_index  # noqa: PLC0415

        fold = cls(elements.graph, elements.weight, num_examples)
        fold.N = batch.shape[0]
        fold.node_src = elements.order
        fold.new_batch = elements.copy_index()
        fold.new_ptr = elements.ptr
        if edge_index is not None:
            _check_edges(edge_index, batch, fold.N)
            fold.edge_index, fold.edge_src, fold.edge_copy = fold_edge_index(elements, edge_index, fold.N, return_source=True)
            fold.num_edges = edge_index.shape[1]
        return fold

    def average(self, values: Tensor) -> Tensor:
        return _weighted_sum(values, self.index, self.weight, self.B)


def _check_edges(edge_index: Tensor, batch: Tensor, N: int) -> None:
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index: expected shape [2, E], got {tuple(getattr(edge_index, 'shape', ()))}")
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= N):
        raise ValueError(f"edge_index: node ids must lie in [0, {N}), got range [{int(edge_index.min())}, {int(edge_index.max())}]")
    if bool((batch[edge_index[1]] != batch[edge_index[0]]).any()):
        raise ValueError("edge_index: an edge connects nodes of different examples of the batch vector")


class FrameAveraging(nn.Module):
    """Wrap any backbone so that it becomes exactly invariant/equivariant by frame averaging.

    Args:
        backbone: any ``nn.Module`` or callable, called with keyword arguments (or with one PyG
            ``Data`` when the wrapper is called with one).
        group: ``"O(d)"``, ``"SO(d)"``, ``"E(d)"``, ``"SE(d)"`` for a concrete ``d`` (``"E(3)"``) or
            with a literal ``d`` (``"E(d)"``: the dimension is read from the data); or ``"S_n"``,
            node permutations of graphs (Laplacian frames, :func:`equiframe.frames.graph.laplacian_frame`).
        inputs: how keyword inputs transform: a reps string (``"1x1n"``, ``"2x0n+1x2n"``), ``"pos"``
            (positions: rotate and translate) or ``"scalar"`` (invariant, any shape: only
            replicated). Keyword inputs not listed pass through unchanged.
        output: the type of the backbone's output: a reps string, ``"pos"``, ``"scalar"``, or a
            tuple / dict of them matching a tuple / dict returned by the backbone. Scalars only =
            an invariant model.
        mode: ``"all"`` (full frames), ``"canonical"`` (minimal frames: one element on generic
            inputs) or ``"stochastic"`` (``n_samples`` sampled elements per example while training).
        n_samples: elements per example in stochastic mode (default 1).
        frame_from: the input the frame is computed from (default: the one input typed ``"pos"``).
        eval_mode: the mode used in ``eval()`` when ``mode="stochastic"`` (default ``"all"``).
        generator: ``torch.Generator`` for stochastic mode (reproducible sampling).
        tol, max_size: see :func:`equiframe.frames.pca_frame`. For ``"S_n"``, ``max_size`` is the largest
            frame averaged exactly; larger frames are sampled (``n_samples`` elements, default 1).
        components: ``"S_n"`` with ``mode="stochastic"`` only. ``"shuffled"``: while sampling in training, every
            graph's connected components come in a uniformly random order, i.e. samples of the component
            frame of :func:`~equiframe.frames.graph.shuffle_components`, so that a position-reading backbone
            sees every component at every offset; evaluation modes use the spectral frame unchanged.
            ``"sorted"`` (default): the spectral frame throughout.

    **Permutation frames** (``group="S_n"``): inputs are graphs (``edge_index=``, ``batch=``); all inputs
    and outputs are ``"scalar"`` (node features are reordered with the nodes, nothing rotates). The
    frame is computed from ``edge_index`` (plus the node input named by ``frame_from``, if given, as
    extra sort keys). Every copy handed to the backbone lists its nodes **in frame order**, so a
    backbone can read canonical node ids as ``arange(N) - ptr[batch]`` (:func:`node_ranks`). Modes:
    ``"all"`` = exact average for frames up to ``max_size`` elements, ``n_samples`` samples above;
    ``"stochastic"`` = ``n_samples`` samples per graph while training; ``"canonical"`` = one element.

    Calling conventions (``batch=`` and ``mask=`` are consumed by the wrapper and given to the backbone
    in folded form, ``edge_index=`` is replicated with offsets; the frame comes from ``frame_from``):

    * dense: ``fa(pos=[B, N, d], vel=[B, N, 3], mask=[B, N])`` or one cloud ``pos=[N, d]``;
      per-point inputs ``[B, N, C]``, per-example inputs ``[B, C]``;
    * ragged: ``fa(pos=[N, d], x=[N, F], edge_index=[2, E], batch=[N])``; per-node inputs
      ``[N, C]``, per-graph inputs ``[B, C]``; the backbone receives ``batch`` over ``M`` graphs;
    * PyG: ``fa(data)`` with a ``Data``/``Batch``; the backbone receives a ``Data`` with the
      declared attributes transformed, ``edge_index``, ``batch`` and ``ptr`` of the folded batch.

    Outputs are per example (``[M, C]`` -> ``[B, C]``) or per point (``[M, N, C]`` -> ``[B, N, C]``;
    ragged ``[N_rep, C]`` -> ``[N, C]``), mapped back with ``rho(g)`` and averaged with the frame weights.

    Example:
        >>> fa = FrameAveraging(backbone, group="E(3)",
        ...                     inputs={"pos": "pos", "vel": "1x1n", "charge": "1x0n"}, output="pos")
        >>> y = fa(pos=pos, vel=vel, charge=charge)              # pos [B, N, 3]
        >>> y, frame = fa(pos=pos, vel=vel, charge=charge, return_frame=True)
        >>> frame.degenerate                                      # which examples had tied eigenvalues
    """

    def __init__(
        self,
        backbone: Callable[..., Any],
        group: "str | EuclideanGroup" = "E(3)",
        inputs: Mapping[str, Any] | None = None,
        output: Any = SCALAR,
        mode: Literal["all", "canonical", "stochastic"] = "all",
        n_samples: int | None = None,
        *,
        frame_from: str | None = None,
        eval_mode: Literal["all", "canonical"] = "all",
        generator: torch.Generator | None = None,
        tol: Tolerances | None = None,
        max_size: int = 1024,
        components: Literal["sorted", "shuffled"] = "sorted",
    ):
        super().__init__()
        if not callable(backbone):
            raise TypeError(f"backbone: expected a callable or nn.Module, got {type(backbone).__name__}")
        if mode not in ("all", "canonical", "stochastic"):
            raise ValueError(f"mode: expected 'all', 'canonical' or 'stochastic', got {mode!r}")
        if eval_mode not in ("all", "canonical"):
            raise ValueError(f"eval_mode: expected 'all' or 'canonical', got {eval_mode!r}")
        if n_samples is not None and (not isinstance(n_samples, int) or n_samples < 1):
            raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
        self.permutation = isinstance(group, str) and group.replace(" ", "") in ("S_n", "Sn", "S(n)")
        if components not in ("sorted", "shuffled"):
            raise ValueError(f"components: expected 'sorted' or 'shuffled', got {components!r}")
        if components != "sorted" and not self.permutation:
            raise ValueError("components: only meaningful with group='S_n'")
        if components != "sorted" and mode != "stochastic":
            raise ValueError("components: 'shuffled' acts on sampled training frames; use mode='stochastic'")
        self.components = components
        if n_samples is not None and mode != "stochastic" and not self.permutation:
            raise ValueError("n_samples: only meaningful with mode='stochastic'")
        self.backbone = backbone
        self.group = group
        self._group_fixed = None
        if self.permutation:
            pass
        elif isinstance(group, EuclideanGroup):
            self._group_fixed = group
        elif isinstance(group, str):
            if "(d)" not in group.replace(" ", ""):
                self._group_fixed = EuclideanGroup.parse(group)
            else:
                EuclideanGroup.parse(group, dim=3)  # validate the name now
        else:
            raise TypeError(f"group: expected a string like 'E(3)' or an EuclideanGroup, got {type(group).__name__}")
        self.inputs = dict(inputs or {})
        self.output = output
        self.mode = mode
        self.n_samples = n_samples or 1
        self.eval_mode = eval_mode
        self.generator = generator
        self.tol = tol
        self.max_size = max_size
        if self.permutation:
            for k, v in list(self.inputs.items()) + [(f"output[{k!r}]", v) for k, v in self._output_items()]:
                if _resolve(v, 1, str(k)) != SCALAR:
                    raise ValueError(f"{k}: with group 'S_n' every input and output is 'scalar' (got {v!r})")
            if frame_from is not None and frame_from not in self.inputs:
                raise ValueError(f"frame_from: {frame_from!r} is not one of the declared inputs {list(self.inputs)}")
            self.frame_from = frame_from
            return
        if frame_from is None:
            pos_like = [k for k, v in self.inputs.items() if isinstance(v, str) and v.strip() == "pos"]
            if len(pos_like) != 1:
                raise ValueError(
                    "frame_from: give the input the frame is computed from; inputs declares "
                    f"{len(pos_like)} inputs of type 'pos' ({pos_like})"
                )
            frame_from = pos_like[0]
        elif frame_from not in self.inputs:
            raise ValueError(f"frame_from: {frame_from!r} is not one of the declared inputs {list(self.inputs)}")
        self.frame_from = frame_from
        # validate all type strings once (dimension 3 is only a stand-in for the syntax check)
        dim0 = self._group_fixed.dim if self._group_fixed is not None else 3
        for k, v in self.inputs.items():
            _resolve(v, dim0, f"inputs[{k!r}]")
        for k, v in self._output_items():
            _resolve(v, dim0, f"output[{k!r}]" if k is not None else "output")

    # ------------------------------------------------------------------ introspection
    def _output_items(self) -> list[tuple[Any, Any]]:
        if isinstance(self.output, Mapping):
            return list(self.output.items())
        if isinstance(self.output, (tuple, list)):
            return list(enumerate(self.output))
        return [(None, self.output)]

    def group_for(self, dim: int) -> EuclideanGroup:
        """The concrete group acting on ``dim``-dimensional data."""
        if self._group_fixed is not None:
            if self._group_fixed.dim != dim:
                raise ValueError(f"{self.frame_from}: data has dimension {dim}, but group is {self._group_fixed}")
            return self._group_fixed
        return EuclideanGroup.parse(self.group, dim=dim)

    def reps_in(self, dim: int | None = None) -> dict[str, "TensorReps | str"]:
        """Declared input types (``TensorReps`` or ``"scalar"``)."""
        d = dim or (self._group_fixed.dim if self._group_fixed else 3)
        return {k: _resolve(v, d, k) for k, v in self.inputs.items()}

    def reps_out(self, dim: int | None = None):
        """Declared output type(s), in the structure of ``output``."""
        d = dim or (self._group_fixed.dim if self._group_fixed else 3)
        items = [(k, _resolve(v, d, "output")) for k, v in self._output_items()]
        if isinstance(self.output, Mapping):
            return dict(items)
        if isinstance(self.output, (tuple, list)):
            return tuple(v for _, v in items)
        return items[0][1]

    def extra_repr(self) -> str:
        return f"group={self.group}, mode={self.mode!r}, inputs={self.inputs}, output={self.output!r}"

    # ------------------------------------------------------------------ frames
    def frame(self, pos: Tensor, *, mask: Tensor | None = None, batch: Tensor | None = None) -> Frame:
        """The frame used for ``pos`` in the current mode (training/eval aware)."""
        mode = self.mode if (self.training or self.mode != "stochastic") else self.eval_mode
        G = self.group_for(pos.shape[-1]) if isinstance(pos, Tensor) and pos.dim() >= 1 else None
        return pca_frame(
            pos, group=G if G is not None else self.group, mask=mask, batch=batch, mode=mode,
            n_samples=self.n_samples, generator=self.generator, tol=self.tol, max_size=self.max_size,
        )

    # ------------------------------------------------------------------ forward
    def _current_mode(self) -> str:
        return self.mode if (self.training or self.mode != "stochastic") else self.eval_mode

    def forward(self, *args, return_frame: bool = False, **kwargs):
        data_in = None
        if args:
            if len(args) == 1 and _is_data(args[0]) and not kwargs:
                data_in = args[0]
                kwargs = {k: data_in[k] for k in data_in.keys() if k in self.inputs or k in ("edge_index", "batch")}
                if "batch" not in kwargs:
                    kwargs["batch"] = torch.zeros(data_in.num_nodes, dtype=torch.long, device=data_in.edge_index.device)
            else:
                raise TypeError("FrameAveraging: call with keyword inputs (fa(pos=..., ...)) or with one PyG Data/Batch")
        for k, v in kwargs.items():
            if k in self.inputs and isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise ValueError(f"{k}: contains NaN or inf")
        if self.permutation:
            fold, types, unbatched, d, frame = self._fold_permutation(kwargs)
        else:
            fold, types, unbatched, d, frame = self._fold_euclidean(kwargs)
        call = {}
        for k, v in kwargs.items():
            if k in types:
                call[k] = self._fold_input(k, v, types[k], fold)
            elif k == "edge_index" and not fold.dense:
                call[k] = fold.edge_index
            elif k in ("batch", "mask"):
                continue
            else:
                call[k] = v
        if fold.dense:
            if kwargs.get("mask") is not None:
                call["mask"] = kwargs["mask"][fold.index]
        else:
            call["batch"] = fold.new_batch
        if data_in is not None:
            from torch_geometric.data import Data  # noqa: PLC0415

            folded = Data(**call)
            folded.ptr = fold.new_ptr
            folded.num_graphs = fold.M
            out = self.backbone(folded)
        else:
            out = self.backbone(**call)
        result = self._unfold_outputs(out, fold, d, unbatched)
        return (result, frame) if return_frame else result

    def _fold_euclidean(self, kwargs: dict):
        if self.frame_from not in kwargs:
            raise ValueError(f"{self.frame_from}: missing input (the frame is computed from it)")
        pos = kwargs[self.frame_from]
        if not isinstance(pos, Tensor):
            raise TypeError(f"{self.frame_from}: expected a tensor, got {type(pos).__name__}")
        batch, mask = kwargs.get("batch"), kwargs.get("mask")
        d = pos.shape[-1] if pos.dim() >= 1 else 0
        G = self.group_for(d)
        types = {k: _resolve(v, d, f"inputs[{k!r}]") for k, v in self.inputs.items()}
        unbatched = batch is None and pos.dim() == 2
        if unbatched:
            for k in types:
                if k in kwargs and isinstance(kwargs[k], Tensor):
                    kwargs[k] = kwargs[k][None]
            if mask is not None:
                kwargs["mask"] = mask = mask[None]
            pos = kwargs[self.frame_from]
        frame = pca_frame(
            pos, group=G, mask=mask, batch=batch, mode=self._current_mode(),
            n_samples=self.n_samples, generator=self.generator, tol=self.tol, max_size=self.max_size,
        )
        fold = _Fold.euclidean(frame, dense=batch is None, batch=batch, edge_index=kwargs.get("edge_index"))
        fold.points = pos.shape[-2] if batch is None else None
        return fold, types, unbatched, d, frame

    def _fold_permutation(self, kwargs: dict):
        from .frames.graph import frame_elements, laplacian_frame, shuffle_components  # noqa: PLC0415

        edge_index, batch = kwargs.get("edge_index"), kwargs.get("batch")
        if edge_index is None:
            raise ValueError("edge_index: group 'S_n' needs the graph (edge_index=...)")
        if batch is None:
            sizes = [v.shape[0] for k, v in kwargs.items() if k in self.inputs and isinstance(v, Tensor)]
            n = sizes[0] if sizes else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
            batch = kwargs["batch"] = torch.zeros(n, dtype=torch.long, device=edge_index.device)
        if not isinstance(batch, Tensor) or batch.dim() != 1:
            raise ValueError(f"batch: expected a 1-D tensor, got {getattr(batch, 'shape', batch)!r}")
        if batch.numel() == 0:
            raise ValueError("batch: empty graph batch (0 nodes)")
        B = int(batch.max()) + 1
        counts = torch.bincount(batch, minlength=B)
        if bool((counts == 0).any()):
            raise ValueError(f"batch: graph(s) {(counts == 0).nonzero().flatten().tolist()} have no nodes")
        keys = None
        if self.frame_from is not None:
            if self.frame_from not in kwargs:
                raise ValueError(f"{self.frame_from}: missing input (the frame keys use it)")
            keys = kwargs[self.frame_from]
        frame = laplacian_frame(edge_index, num_nodes=batch.shape[0], batch=batch, x=keys, num_graphs=B)
        mode = self._current_mode()
        if self.components == "shuffled" and mode == "stochastic":
            frame = shuffle_components(frame, edge_index, self.generator)
        limit = self.max_size if mode == "all" else 1
        k = 1 if mode == "canonical" else self.n_samples
        dtype = next((v.dtype for k_, v in kwargs.items() if k_ in self.inputs and isinstance(v, Tensor) and v.is_floating_point()), torch.float32)
        elements = frame_elements(frame, limit=limit, k=k, generator=self.generator, weight_dtype=dtype)
        fold = _Fold.permutation(elements, batch=batch, edge_index=edge_index, num_examples=B)
        types = {k_: SCALAR for k_ in self.inputs}
        return fold, types, False, 0, (frame, elements)

    def _fold_input(self, name: str, x: Any, typ, fold: _Fold) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
        if fold.dense:
            if x.shape[0] != fold.B:
                raise ValueError(f"{name}: leading dimension {x.shape[0]} does not match the batch size {fold.B} of {self.frame_from}")
            if typ == SCALAR:
                return x[fold.index]
            frame = fold.frame
            per_point = x.dim() == 3
            if per_point and x.shape[1] != fold.points:
                raise ValueError(f"{name}: has {x.shape[1]} points, {self.frame_from} has {fold.points}")
            if x.dim() not in (2, 3):
                raise ValueError(f"{name}: expected [B, C] or [B, N, C] (dense input), got shape {tuple(x.shape)}")
            if x.shape[-1] != typ.size:
                raise ValueError(f"{name}: last dimension {x.shape[-1]} does not match the declared type {str(typ)!r} (size {typ.size})")
            te = fold.example_t if typ.has_pos else None
            if fold.k is not None and _vector_only(typ) and (te is not None or not typ.has_pos):
                xc = _translate_precise(x, typ, te[:, None] if per_point else te) if typ.has_pos else x
                return _fold_vectors(xc, typ, frame, fold.k)
            R = frame.R[:, None] if per_point else frame.R
            if te is not None:  # centre once per example (float64), then gather and rotate
                xc = _translate_precise(x, typ, te[:, None] if per_point else te)
                return typ.to_local(xc[fold.index], R.to(x.dtype))
            t = frame.t[:, None] if per_point else frame.t
            return _to_local(x[fold.index], typ, R, t, name)
        # ragged: per node, per example, or per edge (inputs named edge_*)
        if x.shape[0] == fold.N:
            sel, rep = fold.node_src, fold.new_batch
        elif x.shape[0] == fold.B:
            sel, rep = fold.index, None
        elif name.startswith("edge_") and fold.edge_index is not None and x.shape[0] == fold.num_edges:
            sel, rep = fold.edge_src, fold.edge_copy
        else:
            raise ValueError(
                f"{name}: leading dimension {x.shape[0]} matches neither the number of nodes ({fold.N}) "
                f"nor the number of examples ({fold.B})"
                + (" nor of edges (edge_* inputs)" if fold.edge_index is not None else "")
            )
        xr = x[sel]
        if typ == SCALAR:
            return xr
        frame = fold.frame
        if rep is None:
            return _to_local(xr, typ, frame.R, frame.t, name)
        return _to_local(xr, typ, frame.R[rep], frame.t[rep], name)

    def _unfold_outputs(self, out: Any, fold: _Fold, d: int, unbatched: bool):
        items = self._output_items()
        if isinstance(self.output, Mapping):
            if not isinstance(out, Mapping):
                raise TypeError(f"backbone: returned {type(out).__name__}, but output declares a dict {list(self.output)}")
            missing = [k for k, _ in items if k not in out]
            if missing:
                raise ValueError(f"backbone: output is missing keys {missing}")
            return {k: self._unfold_one(out[k], _resolve(v, d, f"output[{k!r}]"), fold, f"output[{k!r}]", unbatched) for k, v in items}
        if isinstance(self.output, (tuple, list)):
            if not isinstance(out, (tuple, list)) or len(out) != len(items):
                raise TypeError(f"backbone: expected a tuple of {len(items)} outputs, got {type(out).__name__}")
            return tuple(self._unfold_one(out[k], _resolve(v, d, f"output[{k}]"), fold, f"output[{k}]", unbatched) for k, v in items)
        return self._unfold_one(out, _resolve(items[0][1], d, "output"), fold, "output", unbatched)

    def _unfold_one(self, y: Any, typ, fold: _Fold, name: str, unbatched: bool) -> Tensor:
        if not isinstance(y, Tensor):
            raise TypeError(f"{name}: backbone returned {type(y).__name__}, expected a tensor")
        if typ != SCALAR and y.shape[-1] != typ.size:
            raise ValueError(f"{name}: last dimension {y.shape[-1]} does not match the declared type {str(typ)!r} (size {typ.size})")
        frame = fold.frame
        if fold.dense or y.shape[0] == fold.M:
            if y.shape[0] != fold.M:
                raise ValueError(f"{name}: leading dimension {y.shape[0]} is not the folded batch size {fold.M}")
            if fold.dense and fold.k is not None and _vector_only(typ) and (fold.example_t is not None or not typ.has_pos):
                out = _unfold_vectors(y, typ, frame, fold.k, fold.example_t)
                return out[0] if unbatched else out
            if typ != SCALAR:
                per_point = y.dim() == 3
                R = frame.R[:, None] if per_point else frame.R
                t = frame.t[:, None] if per_point else frame.t
                y = typ.to_global(y, R, t if typ.has_pos else None)
            out = fold.average(y)
            return out[0] if unbatched else out
        if y.shape[0] != fold.node_src.shape[0]:
            raise ValueError(
                f"{name}: leading dimension {y.shape[0]} is neither the number of folded graphs ({fold.M}) "
                f"nor of folded nodes ({fold.node_src.shape[0]})"
            )
        if typ != SCALAR:
            rep = fold.new_batch
            y = typ.to_global(y, frame.R[rep], frame.t[rep] if typ.has_pos else None)
        w = fold.weight.to(y.dtype)[fold.new_batch].reshape(-1, *([1] * (y.dim() - 1)))
        return y.new_zeros(fold.N, *y.shape[1:]).index_add_(0, fold.node_src, y * w)


def _vector_only(typ) -> bool:
    """Reps made of order-1 blocks of one parity (vectors and positions, or pseudo-vectors)."""
    if typ == SCALAR or not len(typ.blocks) or any(b.order != 1 for b in typ.blocks):
        return False
    return len({b.parity == "p" for b in typ.blocks}) == 1


def _stacked(frame: Frame, k: int, pseudo: bool, dtype) -> Tensor:
    """``[B, k, d, d]`` frame matrices (times ``det`` for pseudo-vectors)."""
    d = frame.dim
    R = frame.R.to(dtype).reshape(-1, k, d, d)
    if pseudo:
        R = R * torch.linalg.det(R.detach()).sign()[..., None, None]
    return R


def _fold_vectors(x: Tensor, typ: TensorReps, frame: Frame, k: int) -> Tensor:
    """Local copies of (centred) vector features for all ``k`` frame elements with one matmul per
    example: ``[B, N*n, d] @ [B, d, k*d]`` (the inner width is ``k*d``, not ``d``)."""
    d = frame.dim
    pseudo = typ.blocks[0].parity == "p"
    B = x.shape[0]
    per_point = x.dim() == 3
    N = x.shape[1] if per_point else 1
    n = typ.size // d
    R = _stacked(frame, k, pseudo, x.dtype)  # local = x @ R_m^T
    Rcat = R.transpose(-1, -2).permute(0, 2, 1, 3).reshape(B, d, k * d)
    z = torch.bmm(x.reshape(B, N * n, d), Rcat).view(B, N, n, k, d).permute(0, 3, 1, 2, 4)
    return z.reshape(B * k, N, n * d) if per_point else z.reshape(B * k, n * d)


def _unfold_vectors(y: Tensor, typ: TensorReps, frame: Frame, k: int, t: Tensor | None) -> Tensor:
    """Weighted average of ``R_m^T y_m`` (+ t for positions) over the ``k`` copies of every example,
    fused into one matmul ``[B, N*n, k*d] @ [B, k*d, d]``."""
    d = frame.dim
    pseudo = typ.blocks[0].parity == "p"
    M = y.shape[0]
    B = M // k
    per_point = y.dim() == 3
    N = y.shape[1] if per_point else 1
    n = typ.size // d
    W = _stacked(frame, k, pseudo, y.dtype) * frame.weight.to(y.dtype).view(B, k, 1, 1)  # global_row = y_row @ R_m
    yy = y.reshape(B, k, N, n, d).permute(0, 2, 3, 1, 4).reshape(B, N * n, k * d)
    out = torch.bmm(yy, W.reshape(B, k * d, d)).view(B, N, n * d)
    if typ.has_pos:
        out = typ._translate(out, t.to(y.dtype)[:, None, :], +1.0)
    return out if per_point else out[:, 0]


def node_ranks(batch: Tensor) -> Tensor:
    """Position of every node inside its graph, for a sorted batch vector: ``arange(N) - ptr[batch]``.

    With ``FrameAveraging(group="S_n")`` the nodes of every copy come in frame order, so these are the
    canonical node identifiers (FA-GIN+ID).
    """
    counts = torch.bincount(batch)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return torch.arange(batch.shape[0], device=batch.device) - ptr[batch]


def _to_local(x: Tensor, typ: TensorReps, R: Tensor, t: Tensor, name: str) -> Tensor:
    if x.shape[-1] != typ.size:
        raise ValueError(f"{name}: last dimension {x.shape[-1]} does not match the declared type {str(typ)!r} (size {typ.size})")
    if typ.has_pos:
        x = _translate_precise(x, typ, t)
    return typ.to_local(x, R.to(x.dtype))


def _translate_precise(x: Tensor, typ: TensorReps, t: Tensor) -> Tensor:
    """Subtract ``t`` from the position blocks in float64, so that clouds far from the origin keep
    the precision of their own input."""
    if typ.size == t.shape[-1]:  # a single position block
        return (x.double() - t.double()).to(x.dtype)
    return typ._translate(x.double(), t.double(), -1.0).to(x.dtype)
