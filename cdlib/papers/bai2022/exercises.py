"""Chapter 3 exercises: reference solutions, their checks and their independent oracles.

- 3.1 ``TokenAggregation``: the multi-block feature aggregation that feeds Bai et al.'s pixel decoder (oracle:
  the ``bai2022`` model's own aggregation, ``Bai2022._decoder_input``, with the student's weights);
- 3.2 ``resample_pos_embed``: a ViT's learned position embedding resized to another token grid (oracle:
  timm's ``resample_abs_pos_embed``).

The exercises register with ``cdlib.exercises`` when the paper package is imported (``load_papers``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cdlib.exercises.grading import expect, expect_close, expect_raises, register_exercise


class TokenAggregation(nn.Module):
    """Exercise 3.1: Bai et al.'s aggregation of the token features of
    several transformer blocks.

    ``TokenAggregation(dim, num_inputs)`` holds ``agg_in``, an
    ``nn.ModuleList`` of ``num_inputs`` layers ``nn.Linear(dim, dim //
    num_inputs)`` (one per block), and ``agg_out``, an
    ``nn.Linear(num_inputs * (dim // num_inputs), dim)``.
    ``forward(feats)`` takes a list of ``num_inputs`` token tensors ``(B,
    L, D)`` (the block input and block outputs, class token already
    dropped), passes the i-th through ``agg_in[i]``, concatenates the
    results along the feature axis in the same order and returns
    ``agg_out`` of that: ``(B, L, D)``. ``ValueError`` for ``num_inputs <
    1`` or a list of another length.
    """

    def __init__(self, dim: int, num_inputs: int):
        super().__init__()
        if num_inputs < 1 or dim < num_inputs:
            raise ValueError(f"need 1 <= num_inputs <= dim, got dim={dim}, num_inputs={num_inputs}")
        part = dim // num_inputs
        self.agg_in = nn.ModuleList(nn.Linear(dim, part) for _ in range(num_inputs))
        self.agg_out = nn.Linear(num_inputs * part, dim)

    def forward(self, feats):
        if len(feats) != len(self.agg_in):
            raise ValueError(f"expected {len(self.agg_in)} token tensors, got {len(feats)}")
        return self.agg_out(torch.cat([lin(f) for lin, f in zip(self.agg_in, feats)], dim=-1))


def resample_pos_embed(pos_embed: torch.Tensor, grid, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Exercise 3.2: a ViT position embedding ``(1, P + r*r, D)`` for an r
    x r token grid (row-major, after ``P`` prefix tokens such as the
    class token) resized to a ``grid = (h, w)`` token grid: ``(1, P +
    h*w, D)``.

    The prefix tokens are kept as they are; the grid part is resized as a
    ``D``-channel image with bilinear interpolation
    (``align_corners=False``, no antialiasing), as the ``bai2022`` model
    does for inputs of another size. The same grid returns the embedding
    unchanged. ``ValueError`` when the embedding is not ``(1, N, D)`` or
    ``N - P`` is not a square number.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"expected a (1, N, D) position embedding, got {tuple(pos_embed.shape)}")
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    r = math.isqrt(tokens.shape[1])
    if r * r != tokens.shape[1] or r == 0:
        raise ValueError(f"{tokens.shape[1]} grid tokens (after {num_prefix_tokens} prefix tokens) are not a "
                         f"square grid")
    h, w = grid
    if (h, w) == (r, r):
        return pos_embed
    img = tokens.reshape(1, r, r, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False)
    return torch.cat([prefix, img.flatten(2).transpose(1, 2)], dim=1)


# ------------------------------------------------------------------------------------------------ checks
class _ModelAggregation(nn.Module):
    """The oracle of 3.1: the aggregation inside a ``bai2022`` model, with TokenAggregation's interface."""

    def __init__(self, dim: int, num_inputs: int):
        super().__init__()
        from cdlib.registry import create_model

        self.model = create_model("bai2022", "laptop", D=dim, depth=max(num_inputs - 1, 1), heads=1,
                                  agg_blocks=tuple(range(num_inputs)))
        self.agg_in, self.agg_out = self.model.agg_in, self.model.agg_out

    def forward(self, feats):
        b, n, d = feats[0].shape
        cls = torch.zeros(b, 1, d)
        # input 0 is given both ways: as the block input (with a class token) and as the tokens before the
        # position embedding (what the model's agg_input0="tokens" aggregates)
        out = self.model._decoder_input([torch.cat([cls, f], dim=1) for f in feats], (1, n),
                                        tokens=feats[0])  # (B, D, 1, n)
        return out.flatten(2).transpose(1, 2)


def _oracle_token_aggregation():
    return _ModelAggregation


def _check_token_aggregation(fn, against):
    torch.manual_seed(0)
    m = fn(8, 4)
    expect(isinstance(m, nn.Module), f"TokenAggregation(8, 4) is a {type(m).__name__}, not an nn.Module")
    expect(isinstance(getattr(m, "agg_in", None), nn.ModuleList) and len(m.agg_in) == 4,
           "TokenAggregation(8, 4).agg_in should be an nn.ModuleList of 4 layers")
    shapes = [tuple(lin.weight.shape) for lin in m.agg_in] + [tuple(m.agg_out.weight.shape)]
    expect(shapes == [(2, 8)] * 4 + [(8, 8)], f"weight shapes {shapes}: expected 4 x (2, 8) then (8, 8)")
    # known answer: block i contributes its features 2i, 2i+1, and agg_out is the identity
    with torch.no_grad():
        for i, lin in enumerate(m.agg_in):
            lin.weight.zero_()
            lin.weight[0, 2 * i] = lin.weight[1, 2 * i + 1] = 1.0
            lin.bias.zero_()
        m.agg_out.weight.copy_(torch.eye(8))
        m.agg_out.bias.fill_(0.5)
    feats = [torch.full((1, 3, 8), float(i)) for i in range(4)]
    expect_close(m(feats)[0, 0], [0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 3.5, 3.5], "identity-like weights on blocks "
                 "filled with 0, 1, 2, 3 (concatenate in the order of the blocks)")
    g = torch.Generator().manual_seed(1)
    for dim, k in ((64, 4), (48, 3), (10, 3), (16, 1)):
        torch.manual_seed(dim + k)
        mine = fn(dim, k)
        ref = against(dim, k)
        ref.agg_in.load_state_dict(mine.agg_in.state_dict())
        ref.agg_out.load_state_dict(mine.agg_out.state_dict())
        feats = [torch.randn(2, 5, dim, generator=g, requires_grad=True) for _ in range(k)]
        out = mine(feats)
        expect(tuple(out.shape) == (2, 5, dim), f"TokenAggregation({dim}, {k}): output shape {tuple(out.shape)}, "
                                                f"expected (2, 5, {dim})")
        expect_close(out, ref(feats), f"TokenAggregation({dim}, {k}) on seeded tokens", rtol=1e-5, atol=1e-6)
        n_params = sum(p.numel() for p in mine.parameters())
        part = dim // k
        expected = k * (dim * part + part) + k * part * dim + dim
        expect(n_params == expected, f"TokenAggregation({dim}, {k}) has {n_params} parameters, expected {expected}")
        out.sum().backward()
        expect(all(f.grad is not None for f in feats), "gradients must reach every block's tokens")
    expect_raises(ValueError, fn(8, 2), [torch.zeros(1, 3, 8)] * 3, what="three token tensors for num_inputs=2")


def _oracle_resample_pos_embed():
    from timm.layers import resample_abs_pos_embed

    def resample(pos_embed, grid, num_prefix_tokens=1):
        return resample_abs_pos_embed(pos_embed, new_size=list(grid), num_prefix_tokens=num_prefix_tokens,
                                      interpolation="bilinear", antialias=False)

    return resample


def _check_resample_pos_embed(fn, against):
    # a 2x2 grid of one channel, 0 1 / 2 3, with a class token of value 9, to 4x4: each row is
    # v0, 3/4 v0 + 1/4 v1, 1/4 v0 + 3/4 v1, v1 (bilinear, align_corners=False)
    pe = torch.tensor([9.0, 0.0, 1.0, 2.0, 3.0]).reshape(1, 5, 1)
    out = fn(pe, (4, 4))
    expect(tuple(out.shape) == (1, 17, 1), f"2x2 grid to 4x4: shape {tuple(out.shape)}, expected (1, 17, 1)")
    expect_close(out[0, 0, 0], 9.0, "the class token (kept as it is)")
    expect_close(out[0, 1:5, 0], [0.0, 0.25, 0.75, 1.0], "the first row of the 4x4 grid")
    expect_close(out[0, 1::4, 0], [0.0, 0.5, 1.5, 2.0], "the first column of the 4x4 grid (row-major order)")
    g = torch.Generator().manual_seed(0)
    pe = torch.randn(1, 1 + 16, 6, generator=g)
    expect(torch.equal(fn(pe, (4, 4)), pe), "the same grid: the embedding unchanged")
    for prefix, r, grid in ((1, 4, (8, 8)), (1, 14, (7, 9)), (2, 6, (3, 3)), (0, 5, (10, 4)), (1, 4, (2, 6))):
        pe = torch.randn(1, prefix + r * r, 12, generator=g, requires_grad=True)
        out = fn(pe, grid, num_prefix_tokens=prefix)
        n = prefix + grid[0] * grid[1]
        expect(tuple(out.shape) == (1, n, 12), f"{r}x{r} to {grid}, {prefix} prefix tokens: shape "
                                               f"{tuple(out.shape)}, expected (1, {n}, 12)")
        expect_close(out, against(pe, grid, num_prefix_tokens=prefix),
                     f"{r}x{r} to {grid[0]}x{grid[1]} with {prefix} prefix token(s)", rtol=1e-5, atol=1e-6)
        out.sum().backward()
        expect(pe.grad is not None, "gradients must reach the position embedding (it is learned)")
    expect_raises(ValueError, fn, torch.zeros(1, 1 + 15, 4), (4, 4), what="15 grid tokens (not a square)")
    expect_raises(ValueError, fn, torch.zeros(17, 4), (4, 4), what="a 2-D embedding")


register_exercise("3.1", TokenAggregation, check=_check_token_aggregation, oracle=_oracle_token_aggregation)
register_exercise("3.2", resample_pos_embed, check=_check_resample_pos_embed, oracle=_oracle_resample_pos_embed)
