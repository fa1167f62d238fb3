"""Steering directions from contrastive hidden states at one layer: one plain function per method.

Inputs are last-token hidden states: `pos` and `neg` are (n, d) with row j of each coming from the
same question under the POS and the NEG persona of the same pair; `neutral` is (m, d) from the same
questions with no persona (the model's default system prompt). Every function returns unit rows,
shape (k, d): k = 1 for the single-direction methods and k centroids for `cluster_directions`.
cosine_gated steers along the mean_diff direction; only its application differs (activation.py).

The names follow steering-lite, the reference the seed's tables compare with: mean_diff, mean_centred
(corpus-mean centring), pca, topk_clusters (centroids signed toward POS) and sspace (sspace.py) are
its definitions; neutral_bisector and down_proj_subspace are weightsteer's own variants.
"""

from __future__ import annotations

import torch

from ..errors import WeightsteerError

SSPACE_FRACTION = 0.25  # down_proj_subspace keeps the top quarter of the output projection's singular vectors


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to length 1 (a zero row stays zero rather than becoming NaN)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The normalised mean of the paired differences h_pos - h_neg."""
    return unit((pos - neg).mean(0))[None]


def mean_centred(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean-centring as the reference does it (Jorgensen et al. 2024): the POS mean minus the mean of
    the whole corpus, POS and NEG together. That is n_neg / (n_pos + n_neg) * (mean(pos) - mean(neg)),
    so its unit direction is exactly mean_diff's (the seed's table shows the two rows identical): the
    reference keeps it as a separate row, and so does weightsteer, for comparison."""
    return unit(pos.mean(0) - torch.cat([pos, neg]).mean(0))[None]


def neutral_bisector(pos: torch.Tensor, neg: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """weightsteer's own variant: the bisector of the two persona shifts, each measured from the model's
    default (the neutral prompts).

    v = unit(unit(mean(pos) - mu) - unit(mean(neg) - mu)), mu = mean of the neutral prompts.
    Centring on the mean of pos and neg together would cancel in the difference (it is exactly
    mean_diff when the counts are equal). Centring on the neutral prompts and normalising each
    side first gives the POS shift and the NEG shift equal weight: mean_diff is dominated by
    whichever persona moves the activations further from the default, while this direction points
    as much "toward POS" as "away from NEG", so +alpha and -alpha steer symmetrically. It equals
    mean_diff only when both personas move the mean equally far from the default.
    """
    mu = neutral.mean(0)
    return unit(unit(pos.mean(0) - mu) - unit(neg.mean(0) - mu))[None]


def toward_pos(centroids: torch.Tensor, diffs: torch.Tensor) -> torch.Tensor:
    """Each centroid, negated where its projection on the mean paired difference is negative: cosine
    k-means can settle on a centroid that points toward NEG, which +coef would then push toward."""
    projection = centroids @ diffs.mean(0)
    return torch.where(projection[:, None] < 0, -centroids, centroids)


def pca(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The first principal component of the paired differences, signed as the reference signs it.

    The differences are centred before the SVD (ordinary PCA), so this is the axis along which the
    persona effect varies most across questions, not a restatement of their mean (mean_diff). Its sign:
    positive when more than half of the centred differences project positively on it; on an exact tie,
    the sign of the largest centred projection.
    """
    diffs = pos - neg
    if len(diffs) < 2:
        raise WeightsteerError("pca needs at least two persona-pair differences: use more questions")
    centred = diffs - diffs.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    v = vh[0]
    projections = centred @ v
    positive = float((projections > 0).float().mean())
    sign = torch.sign(projections[projections.abs().argmax()]) if positive == 0.5 else (1.0 if positive > 0.5 else -1.0)
    return (sign * v)[None]


def cluster_directions(pos: torch.Tensor, neg: torch.Tensor, k: int = 4, seed: int = 0,
                       n_iters: int = 20) -> torch.Tensor:
    """k unit centroids of the paired differences by cosine k-means, as the reference runs it.

    Centroids start at k seeded differences. Each of at most n_iters steps assigns every difference to
    the centroid of highest cosine; if a centroid has no member it is replaced by a random difference
    and the step ends there; otherwise each centroid moves to the mean of its members (the raw
    differences), and the loop stops once no centroid moves by more than 1e-6. Finally every centroid
    is signed toward POS (toward_pos) and scaled to unit length.
    """
    diffs = pos - neg
    n = len(diffs)
    if n < k:
        raise WeightsteerError(f"topk_clusters needs at least k={k} differences, got {n}: "
                               "use more questions or a smaller k")
    generator = torch.Generator().manual_seed(seed)
    centroids = diffs[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in range(n_iters):
        members = (unit(diffs) @ unit(centroids).T).argmax(1)
        empty = (torch.bincount(members, minlength=k) == 0).nonzero().flatten()
        if len(empty):
            centroids[empty] = diffs[torch.randperm(n, generator=generator)[:len(empty)]]
            continue
        moved = torch.stack([diffs[members == j].mean(0) for j in range(k)])
        if torch.allclose(moved, centroids, atol=1e-6):
            break
        centroids = moved
    return unit(toward_pos(centroids, diffs))


def down_proj_subspace(pos: torch.Tensor, neg: torch.Tensor, w_out: torch.Tensor,
                       fraction: float = SSPACE_FRACTION) -> torch.Tensor:
    """weightsteer's own variant (its `sspace` before the reference definition replaced it, sspace.py):
    the mean difference projected onto the top left singular vectors of a layer's output weight.

    w_out is the (d, d_in) weight of the Linear that writes into this layer's residual stream
    (activation.py uses the MLP's down_proj). Its left singular vectors U are directions in the
    residual stream, ordered by how strongly the layer can write along them; keeping the top
    `fraction` of them restricts steering to the subspace the layer itself uses most.
    """
    u, _, _ = torch.linalg.svd(w_out.float(), full_matrices=False)
    basis = u[:, :max(1, round(fraction * u.shape[0]))]
    diff = (pos - neg).mean(0)
    return unit(basis @ (basis.T @ diff))[None]
