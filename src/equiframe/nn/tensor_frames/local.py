"""ToLocal / ToGlobal: move typed features into and out of the node frames."""

from __future__ import annotations

from torch import Tensor, nn

from ...reps import TensorReps, as_reps
from .checks import _check_device, _check_features, _check_pos, _check_tensor, check_frames

__all__ = ["ToGlobal", "ToLocal"]


def _resolve_reps(reps: "str | TensorReps", dim: int | None, name: str) -> TensorReps:
    if isinstance(reps, TensorReps):
        if dim is not None and dim != reps.dim:
            raise ValueError(f"{name}: reps {reps!r} has dim {reps.dim}, but dim={dim} was given")
        return reps
    if not isinstance(reps, str):
        raise TypeError(f"{name}: expected a reps string or TensorReps, got {type(reps).__name__}")
    return as_reps(reps, 3 if dim is None else dim, name)


class _FrameMap(nn.Module):
    """Shared body of :class:`ToLocal` / :class:`ToGlobal` (one checked call of ``reps.to_local/to_global``)."""

    _to_global: bool

    def __init__(self, reps: "str | TensorReps", dim: int | None = None):
        super().__init__()
        self.reps_in = self.reps_out = _resolve_reps(reps, dim, "reps")

    def forward(self, x: Tensor, frames: Tensor, pos: Tensor | None = None) -> Tensor:
        reps = self.reps_in
        _check_device("x", _check_tensor(x, "x"), ("frames", frames), ("pos", pos))
        x = _check_features(x, None, reps.size)
        frames = check_frames(frames, x.shape[0], reps.dim).to(x.dtype)
        t = None
        if reps.has_pos:
            if pos is None:
                raise ValueError("pos: reps with 'pos' blocks need the node origins `pos` [N, d]")
            t = _check_pos(pos, x.shape[0], reps.dim).to(x.dtype)
        return reps.to_global(x, frames, t) if self._to_global else reps.to_local(x, frames, t)

    def extra_repr(self) -> str:
        return f"reps={str(self.reps_in)!r}, dim={self.reps_in.dim}"


class ToLocal(_FrameMap):
    r"""Express global typed features in the node frames: :math:`f_i = \rho(R_i) F_i`.

    Position blocks (``pos``) are translated to the node's origin first: :math:`R_i (p - t_i)` with
    ``t_i = pos[i]`` (so a node's own position becomes 0). Tensors and scalars ignore ``pos``.

    Args:
        reps: the type of the features, e.g. ``"16x0n+8x1n+pos"``.
        dim: the space dimension when ``reps`` is a string (default 3, or ``reps.dim``).

    Example:
        >>> import torch
        >>> from equiframe.frames import random_local_frames
        >>> gen = torch.Generator().manual_seed(0)
        >>> F, frames = torch.randn(6, 10, generator=gen), random_local_frames(6, 3, generator=gen)
        >>> to_local = ToLocal("4x0n+2x1n", dim=3)
        >>> f = to_local(F, frames)          # F [N, 10], frames [N, 3, 3]
        >>> torch.allclose(ToGlobal("4x0n+2x1n", dim=3)(f, frames), F, atol=1e-5)
        True

    Shapes:
        x: ``[N, reps.size]``, frames: ``[N, d, d]``, pos: ``[N, d]`` -> ``[N, reps.size]``
    """

    _to_global = False


class ToGlobal(_FrameMap):
    r"""Map local features back to the global frame: :math:`F_i = \rho(R_i^\top) f_i` (positions
    :math:`R_i^\top p + t_i`, ``t_i = pos[i]``).

    Args:
        reps: the type of the features.
        dim: the space dimension when ``reps`` is a string.

    Shapes:
        x: ``[N, reps.size]``, frames: ``[N, d, d]``, pos: ``[N, d]`` -> ``[N, reps.size]``
    """

    _to_global = True


