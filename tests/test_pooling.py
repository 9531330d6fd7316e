"""Poolings: exact equations (float64 plain loops), weights, head dropping, gradients, autocast, compile."""

from __future__ import annotations

import math

import pytest
import torch

from dasv_cli.model.pooling import (
    AttentionPooling,
    DoubleMHAPooling,
    MultiHeadAttentionPooling,
    StatisticalPooling,
    build_pooling,
)

torch.set_num_threads(1)

B, T, D, H = 3, 7, 24, 4  # head size 6


def _x(b: int = B, t: int = T, d: int = D, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g, dtype=torch.float64) * 2


def _randomise(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


# ---------------------------------------------------------------- plain-loop references (the equations)


def loop_mha_contexts(x: torch.Tensor, query: torch.Tensor, scale: float) -> list[list[list[float]]]:
    """c[b][h] = sum_t softmax_t(x_{t,h} . u_h / scale) x_{t,h}, written out element by element."""
    b_n, t_n, d_n = x.shape
    h_n, hs = query.shape
    out = []
    for b in range(b_n):
        heads = []
        for h in range(h_n):
            scores = []
            for t in range(t_n):
                s = 0.0
                for k in range(hs):
                    s += float(x[b, t, h * hs + k]) * float(query[h, k])
                scores.append(s / scale)
            m = max(scores)
            exps = [math.exp(s - m) for s in scores]
            z = sum(exps)
            ctx = [0.0] * hs
            for t in range(t_n):
                w = exps[t] / z
                for k in range(hs):
                    ctx[k] += w * float(x[b, t, h * hs + k])
            heads.append(ctx)
        out.append(heads)
    return out


def loop_double_mha(x: torch.Tensor, query: torch.Tensor, head_query: torch.Tensor, scale: float) -> torch.Tensor:
    """sum_h softmax_h(c_h . v) c_h over the loop MHA contexts."""
    contexts = loop_mha_contexts(x, query, scale)
    rows = []
    for heads in contexts:
        scores = [sum(c[k] * float(head_query[k]) for k in range(len(c))) for c in heads]
        m = max(scores)
        exps = [math.exp(s - m) for s in scores]
        z = sum(exps)
        vec = [0.0] * len(heads[0])
        for h, c in enumerate(heads):
            for k in range(len(c)):
                vec[k] += exps[h] / z * c[k]
        rows.append(vec)
    return torch.tensor(rows, dtype=torch.float64)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("numerics, scale", [("paper", math.sqrt(D // H)), ("original", math.sqrt(H))])
def test_double_mha_equals_plain_loop_float64(numerics: str, scale: float) -> None:
    pool = _randomise(DoubleMHAPooling(D, H, mask_prob=0.3, numerics=numerics).double()).eval()
    x = _x()
    ref = loop_double_mha(x, pool.utterance.query.detach(), pool.head_query.detach(), scale)
    out = pool(x)
    assert out.shape == (B, D // H)
    assert _rel_err(out.detach(), ref) < 1e-6


@pytest.mark.parametrize("numerics, scale", [("paper", math.sqrt(D // H)), ("original", math.sqrt(H))])
def test_mha_equals_plain_loop_float64(numerics: str, scale: float) -> None:
    pool = _randomise(MultiHeadAttentionPooling(D, H, numerics=numerics).double()).eval()
    x = _x(seed=3)
    ref = torch.tensor(loop_mha_contexts(x, pool.query.detach(), scale), dtype=torch.float64).reshape(B, D)
    assert _rel_err(pool(x).detach(), ref) < 1e-6


def test_paper_and_original_scaling_differ() -> None:
    # 24 / 4 heads: head size 6 != 4 heads, so the two numerics must give different weights
    x = _x()
    paper = _randomise(MultiHeadAttentionPooling(D, H, "paper").double())
    orig = MultiHeadAttentionPooling(D, H, "original").double()
    orig.load_state_dict(paper.state_dict())
    assert not torch.allclose(paper.attention(x), orig.attention(x))


def test_attention_pooling_and_statistics_equal_their_equations() -> None:
    x = _x(seed=5)
    att = _randomise(AttentionPooling(D).double())
    u = att.query.detach()
    ref = []
    for b in range(B):
        s = torch.tensor([float(x[b, t] @ u) for t in range(T)], dtype=torch.float64)
        w = torch.exp(s - s.max()) / torch.exp(s - s.max()).sum()
        ref.append(sum(w[t] * x[b, t] for t in range(T)))
    assert _rel_err(att(x).detach(), torch.stack(ref)) < 1e-6

    stats = StatisticalPooling(D, "paper").double()
    out = stats(x)
    mean = x.mean(1)
    std = ((x - mean[:, None]) ** 2).mean(1).sqrt()
    assert _rel_err(out, torch.cat([mean, std], 1)) < 1e-6
    orig = StatisticalPooling(D, "original").double().eval()
    assert _rel_err(orig(x), torch.cat([mean, x.std(1, unbiased=True)], 1)) < 1e-6


def test_attention_weights_sum_to_one() -> None:
    x = _x(t=11).float()
    mha = _randomise(MultiHeadAttentionPooling(D, H, numerics="paper"))
    w = mha.attention(x)
    assert w.shape == (B, 11, H)
    assert torch.allclose(w.sum(dim=1), torch.ones(B, H), atol=1e-6)
    assert (w >= 0).all()
    dmha = _randomise(DoubleMHAPooling(D, H, numerics="paper")).train()
    frame_w, head_w = dmha.attention(x)
    assert torch.allclose(head_w.sum(dim=1), torch.ones(B), atol=1e-6)
    assert torch.allclose(frame_w.sum(dim=1), torch.ones(B, H), atol=1e-6)
    att = _randomise(AttentionPooling(D))
    assert torch.allclose(att.attention(x).sum(dim=1), torch.ones(B), atol=1e-6)


def test_eval_is_deterministic_and_training_drops_heads() -> None:
    pool = _randomise(DoubleMHAPooling(D, H, mask_prob=0.5, numerics="paper")).float()
    x = _x(b=64).float()
    pool.eval()
    a, b = pool(x), pool(x)
    assert torch.equal(a, b)
    _, head_w = pool.attention(x)
    assert (head_w > 0).all()  # nothing dropped in eval
    pool.train()
    torch.manual_seed(0)
    _, head_w = pool.attention(x)
    dropped = (head_w == 0).float().mean().item()
    assert 0.3 < dropped < 0.6
    torch.manual_seed(0)
    c = pool(x)
    torch.manual_seed(1)
    d = pool(x)
    assert not torch.equal(c, d)


@pytest.mark.parametrize("heads, mask_prob, numerics", [(2, 0.9, "paper"), (1, 0.5, "paper"), (4, 0.6, "original")])
def test_masking_never_drops_every_head(heads: int, mask_prob: float, numerics: str) -> None:
    pool = DoubleMHAPooling(heads * 3, heads, mask_prob=mask_prob, numerics=numerics).train()
    torch.manual_seed(123)
    n = 20000
    mask = pool.head_mask(n, torch.device("cpu"))
    assert mask.shape == (n, heads)
    assert not mask.all(dim=1).any()
    if heads > 1:
        assert mask.any()  # dropping does happen
    x = torch.randn(512, 5, heads * 3)
    for _ in range(20):
        out = pool(x)
        assert torch.isfinite(out).all()


def test_drop_rate_matches_numerics() -> None:
    torch.manual_seed(7)
    paper = DoubleMHAPooling(32 * 2, 32, mask_prob=0.3, numerics="paper").train()
    orig = DoubleMHAPooling(32 * 2, 32, mask_prob=0.3, numerics="original").train()
    assert paper.drop_probability == pytest.approx(0.3)
    assert orig.drop_probability == pytest.approx(1 / 3)  # random_(int(1/0.3)) == 0 drops
    rate_p = paper.head_mask(20000, torch.device("cpu")).float().mean().item()
    rate_o = orig.head_mask(20000, torch.device("cpu")).float().mean().item()
    assert abs(rate_p - 0.3) < 0.005
    assert abs(rate_o - 1 / 3) < 0.005
    assert DoubleMHAPooling(8, 4, mask_prob=0.0, numerics="paper").train().drop_probability == 0.0


@pytest.mark.parametrize("name", ["DoubleMHA", "MHA", "Attention", "Statistical"])
def test_gradcheck_poolings(name: str) -> None:
    torch.manual_seed(0)
    pool = build_pooling(name, 8, heads=2, mask_prob=0.3, numerics="paper").double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    # gradients w.r.t. the input ...
    assert torch.autograd.gradcheck(lambda inp: pool(inp), (x,), eps=1e-6, atol=1e-5)
    # ... and w.r.t. every parameter (functional call with the parameter as an input)
    for pname, p in pool.named_parameters():
        q = p.detach().clone().requires_grad_(True)

        def fp(v: torch.Tensor, pname: str = pname) -> torch.Tensor:
            return torch.func.functional_call(pool, {pname: v}, (x.detach(),))

        assert torch.autograd.gradcheck(fp, (q,), eps=1e-6, atol=1e-5), pname


def test_double_mha_training_gradients_are_finite_even_with_heavy_masking() -> None:
    torch.manual_seed(0)
    pool = DoubleMHAPooling(12, 3, mask_prob=0.95, numerics="paper").train()
    x = torch.randn(256, 6, 12, requires_grad=True)
    pool(x).square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in pool.parameters())


@pytest.mark.parametrize("name", ["DoubleMHA", "MHA", "Attention", "Statistical"])
def test_autocast_bfloat16(name: str) -> None:
    torch.manual_seed(0)
    pool = build_pooling(name, 64, heads=8, numerics="paper").eval()
    x = torch.randn(4, 9, 64)
    ref = pool(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x.bfloat16())
    assert torch.isfinite(out.float()).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3


def test_original_statistics_keep_their_noise_and_finite_gradients_under_bfloat16() -> None:
    # A channel that is constant over frames (here 1.0) has std 0, whose gradient is 0/0: the original
    # numerics add N(0, 1e-4^2) noise to avoid that. In bf16, 1 + 1e-4 rounds back to 1, so the
    # statistics are computed in float32 (bf16 training of VGG4L K=128: EER 6.0 % without it, 4.9 % with it).
    torch.manual_seed(0)
    pool = StatisticalPooling(8, numerics="original").train()
    x = torch.ones(2, 50, 8, dtype=torch.bfloat16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pool(x)
    std = out[:, 8:].float()
    assert (std > 3e-5).all() and (std < 3e-4).all()
    out.float().sum().backward()
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("training", [False, True])
def test_double_mha_compiles_without_graph_breaks(training: bool) -> None:
    import torch._dynamo

    torch._dynamo.reset()
    pool = DoubleMHAPooling(64, 8, mask_prob=0.3, numerics="paper").train(training)
    explanation = torch._dynamo.explain(pool)(torch.randn(3, 10, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
