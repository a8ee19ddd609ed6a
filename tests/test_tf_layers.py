"""Tests of the native tensor-frame layers: TensorFrameConv and TensorFrameAttention."""

from __future__ import annotations

import pytest
import torch

from equiframe.groups import random_orthogonal
from equiframe.nn.tensor_frames import local_edge_geometry, transport
from equiframe.nn.tf_attention import TensorFrameAttention
from equiframe.nn.tf_conv import TensorFrameConv
from equiframe.reps import TensorReps


def knn_batch(sizes, d, k, gen, dtype=torch.float64):
    pos = torch.randn(sum(sizes), d, generator=gen, dtype=torch.float64).to(dtype)
    batch = torch.cat([torch.full((n,), b) for b, n in enumerate(sizes)])
    dist = torch.cdist(pos.double(), pos.double())
    dist[batch[:, None] != batch[None, :]] = float("inf")
    dist.fill_diagonal_(float("inf"))
    nb = dist.topk(k, largest=False).indices
    ei = torch.stack([nb.reshape(-1), torch.arange(pos.shape[0]).repeat_interleave(k)])
    return pos, batch, ei


def group_elements(n, d, gen, dtype=torch.float64):
    Q = random_orthogonal(n, d, generator=gen)
    det = torch.linalg.det(Q)
    want = torch.tensor([1.0 if b % 2 == 0 else -1.0 for b in range(n)], dtype=torch.float64)
    Q[:, 0] = Q[:, 0] * (det * want).unsqueeze(-1)
    return Q.to(dtype), torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)


# ------------------------------------------------------------------------------------------ TensorFrameConv
@pytest.mark.parametrize("d", [2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("aggr", ["sum", "mean"])
def test_native_conv_equivariance(d, dtype, aggr, device):
    gen = torch.Generator().manual_seed(d)
    torch.manual_seed(0)
    r_in = TensorReps("3x0n+1x0p+2x1n+1x1p+1x2n+1xpos", dim=d)
    r_out = TensorReps("2x0n+1x1n+1x1p+1x2n", dim=d)
    r_e = TensorReps("1x0n+1x1n", dim=d)
    conv = TensorFrameConv(r_in, r_out, hidden_channels=16, aggr=aggr, reps_edge=r_e).to(dtype).to(device)
    sizes = [7, 8, 6]
    pos, batch, ei = knn_batch(sizes, d, 3, gen, dtype)
    n = pos.shape[0]
    F = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64).to(dtype)
    e = torch.randn(ei.shape[1], r_e.size, generator=gen, dtype=torch.float64).to(dtype)
    R = random_orthogonal(n, d, generator=gen, dtype=dtype)
    Q, s = group_elements(len(sizes), d, gen, dtype)
    Qn, sn = Q[batch], s[batch]
    Qe = Qn[ei[1]]
    pos, ei, F, e, R, Qn, sn, Qe = (t.to(device) for t in (pos, ei, F, e, R, Qn, sn, Qe))

    def run(F, e, R, p):
        return r_out.to_global(conv(r_in.to_local(F, R, p), ei, R, p, edge_attr=e), R)

    out = run(F, e, R, pos)
    out2 = run(r_in.transform(F, Qn, sn), r_e.transform(e, Qe), R @ Qn.transpose(1, 2),
               (Qn @ pos.unsqueeze(-1)).squeeze(-1) + sn)
    err = ((out2 - r_out.transform(out, Qn)).abs().max() / out.abs().max()).item()
    assert err <= (1e-9 if dtype == torch.float64 else 1e-4), err


def test_native_conv_matches_per_edge_reference():
    """The split first layer and the post-aggregation last layer are exact rewrites of the textbook phi."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    d = 3
    r_in = TensorReps("2x0n+1x1n+1x1p+1x2n", dim=d)
    r_out = TensorReps("1x0n+1x1n", dim=d)
    for aggr in ("sum", "mean"):
        conv = TensorFrameConv(r_in, r_out, hidden_channels=8, message_layers=3, aggr=aggr).double()
        pos, _, ei = knn_batch([9], d, 3, gen)
        ei = torch.cat([ei, torch.tensor([[0, 1], [0, 0]])], 1)  # irregular degree
        n = pos.shape[0]
        x = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64)
        R = random_orthogonal(n, d, generator=gen)
        src, dst = ei
        t_j = transport(r_in, x[src], R, R, src, dst)  # full transported neighbour features
        geom = local_edge_geometry(pos, pos, R, src, dst)
        # textbook: phi(cat[f_i, rho(R_ij) f_j, geometry]) with the same weights, per edge
        scal = [0, 1]
        W_full_in = torch.cat([x[dst], t_j[:, scal], t_j[:, 2:], geom], 1)
        W = torch.cat([conv.msg_dst.weight, conv.msg_src.weight, conv.msg_edge.weight], 1)
        h = W_full_in @ W.T + conv.msg_dst.bias
        m = conv.msg_out(conv.msg_mid(h))
        agg = torch.zeros(n, m.shape[1], dtype=torch.float64).index_add_(0, dst, m)
        if aggr == "mean":
            deg = torch.bincount(dst, minlength=n).clamp(min=1).double()
            agg = agg / deg.unsqueeze(-1)
        ref = conv.update_mlp(torch.cat([x, agg], 1))
        torch.testing.assert_close(conv(x, ei, R, pos), ref, rtol=0, atol=1e-12)


def test_native_conv_identity_frames_equal_no_frames():
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(0)
    d = 3
    r = TensorReps("2x0n+2x1n+1x2n", dim=d)
    conv = TensorFrameConv(r, r, hidden_channels=8).double()
    pos, _, ei = knn_batch([10], d, 3, gen)
    x = torch.randn(pos.shape[0], r.size, generator=gen, dtype=torch.float64)
    eye = torch.eye(d, dtype=torch.float64).expand(pos.shape[0], d, d)
    torch.testing.assert_close(conv(x, ei, eye, pos), conv(x, ei, None, pos), rtol=0, atol=1e-12)


def test_native_conv_bipartite_and_degenerate_geometry():
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    d = 3
    r = TensorReps("2x0n+1x1n+1x2n", dim=d)
    conv = TensorFrameConv(r, r, hidden_channels=8).double()
    ns, nt = 7, 4
    ps = torch.randn(ns, d, generator=gen, dtype=torch.float64)
    pt = ps[:nt].clone()  # targets coincide with sources: zero-length edges
    ei = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0], [0, 1, 2, 3, 0, 1, 2, 3]])
    xs = torch.randn(ns, r.size, generator=gen, dtype=torch.float64)
    xt = torch.randn(nt, r.size, generator=gen, dtype=torch.float64)
    Rs, Rt = random_orthogonal(ns, d, generator=gen), random_orthogonal(nt, d, generator=gen)
    Q, s = group_elements(1, d, gen)
    Q, s = Q[0], s[0]

    def run(xs, xt, Rs, Rt, ps, pt):
        out = conv((r.to_local(xs, Rs), r.to_local(xt, Rt)), ei, (Rs, Rt), (ps, pt))
        return r.to_global(out, Rt)

    out = run(xs, xt, Rs, Rt, ps, pt)
    out2 = run(r.transform(xs, Q), r.transform(xt, Q), Rs @ Q.T, Rt @ Q.T, ps @ Q.T + s, pt @ Q.T + s)
    torch.testing.assert_close(out2, r.transform(out, Q), rtol=0, atol=1e-10)
    ps = ps.requires_grad_(True)
    y = conv((xs, xt), ei, (Rs, Rt), (ps, pt))
    (g,) = torch.autograd.grad(y.square().sum(), ps, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), ps)
    assert torch.isfinite(y).all() and torch.isfinite(g).all() and torch.isfinite(h).all()


def test_native_conv_validation(device):
    r = TensorReps("2x0n+1x1n", dim=3)
    with pytest.raises(ValueError, match="message_layers"):
        TensorFrameConv(r, r, message_layers=1)
    with pytest.raises(ValueError, match="aggr"):
        TensorFrameConv(r, r, aggr="max")  # type: ignore[arg-type]
    conv = TensorFrameConv(r, r).to(device)
    x = torch.randn(4, r.size, device=device)
    ei = torch.tensor([[0, 1], [1, 2]], device=device)
    frames = random_orthogonal(4, 3, dtype=torch.float32).to(device)
    with pytest.raises(ValueError, match="pos"):
        conv(x, ei, frames)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, ei, None, torch.randn(4, 3, device=device), edge_attr=torch.randn(2, 1, device=device))
    # another device for one input (meta stands for it on a CPU-only machine), or for the parameters: named
    with pytest.raises(ValueError, match="x: is on meta"):
        conv(x.to("meta"), ei, frames, torch.randn(4, 3, device=device))
    with pytest.raises(ValueError, match="edge_index: is on meta"):
        conv(x, ei.to("meta"), None, torch.randn(4, 3, device=device))
    with pytest.raises(ValueError, match="the module's parameters are on meta"):
        TensorFrameConv(r, r).to("meta")(x, ei, frames, torch.randn(4, 3, device=device))


# ------------------------------------------------------------------------------------ TensorFrameAttention
REPS_QK = "2x0n+1x1n+1x1p+1x2n"


@pytest.mark.parametrize("d", [2, 3, 4])
def test_attention_global_path_equals_edge_path(d):
    gen = torch.Generator().manual_seed(10 + d)
    torch.manual_seed(0)
    r_in = TensorReps("3x0n+2x1n+1x1p+1x2n", dim=d)
    att = TensorFrameAttention(r_in, r_in, reps_qk=TensorReps(REPS_QK, dim=d), reps_v="1x0n+2x1n+1x2p",
                               heads=2, dim=d).double()
    pos, batch, ei = knn_batch([8, 6, 7], d, 4, gen)
    n = pos.shape[0]
    x = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64)
    R = random_orthogonal(n, d, generator=gen)
    # sparse graph: PyG edge softmax on global-frame q/k/v vs per-edge transport of k_j, v_j
    torch.testing.assert_close(att(x, R, ei, path="global"), att(x, R, ei, path="edge"), rtol=0, atol=1e-10)
    # full attention per graph: SDPA on dense global blocks vs per-edge path on the complete graph
    dense = att(x, R, None, batch, path="global")
    torch.testing.assert_close(dense, att(x, R, None, batch, path="edge"), rtol=0, atol=1e-10)
    full = TensorFrameAttention._full_graph(n, batch, x.device)
    torch.testing.assert_close(dense, att(x, R, full, path="global"), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_attention_equivariance(dtype, device):
    gen = torch.Generator().manual_seed(20)
    torch.manual_seed(0)
    d = 3
    r_in = TensorReps("3x0n+2x1n+1x1p+1x2n", dim=d)
    r_out = TensorReps("1x0n+1x1n+1x1p+1x2n", dim=d)
    att = TensorFrameAttention(r_in, r_out, reps_qk=REPS_QK, heads=2, dim=d).to(dtype).to(device)
    sizes = [6, 9]
    pos, batch, ei = knn_batch(sizes, d, 3, gen, dtype)
    n = pos.shape[0]
    F = torch.randn(n, r_in.size, generator=gen, dtype=torch.float64).to(dtype)
    R = random_orthogonal(n, d, generator=gen, dtype=dtype)
    Q, _ = group_elements(len(sizes), d, gen, dtype)
    Qn = Q[batch]
    ei, batch, F, R, Qn = (t.to(device) for t in (ei, batch, F, R, Qn))
    for edges in (ei, None):
        def run(F, R):
            return r_out.to_global(att(r_in.to_local(F, R), R, edges, batch), R)

        out = run(F, R)
        out2 = run(r_in.transform(F, Qn), R @ Qn.transpose(1, 2))
        err = ((out2 - r_out.transform(out, Qn)).abs().max() / out.abs().max()).item()
        assert err <= (1e-9 if dtype == torch.float64 else 1e-4)


def test_attention_validation(device):
    with pytest.raises(ValueError, match="reps_qk"):
        TensorFrameAttention("2x0n", "2x0n", reps_qk="pos")
    with pytest.raises(ValueError, match="heads"):
        TensorFrameAttention("2x0n", "2x0n", reps_qk="2x0n", heads=0)
    att = TensorFrameAttention("2x0n+1x1n", "2x0n", reps_qk="1x1n").to(device)
    x = torch.randn(3, 5, device=device)
    with pytest.raises(ValueError, match="frames"):
        att(x, torch.randn(3, 2, 2, device=device))
    frames = random_orthogonal(3, 3, dtype=torch.float32).to(device)
    with pytest.raises(ValueError, match="frames: is on meta"):
        att(x, frames.to("meta"))
    with pytest.raises(ValueError, match="batch: is on meta"):
        att(x, frames, None, torch.zeros(3, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="the module's parameters are on meta"):
        TensorFrameAttention("2x0n+1x1n", "2x0n", reps_qk="1x1n").to("meta")(x, frames)
