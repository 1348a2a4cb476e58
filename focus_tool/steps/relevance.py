"""Stage III: the object relevance map from cached VALUE vectors (paper §3.2, Fig. 7; docs/method.md, Stage III).

For each layer l in [l, L) and each target token t:
    v^ = v / ||v||  per KV head                                  (H, N, D)
    S[t, j] = sum_h <v^_{h,t}, v^_{h,j}>                          sum of per-head cosines, (N,)
    a_t = S[t, vis] / (sum_j S[t, j] + 1)                         row of (S + I) / 2, row-normalised  [Fig. 7]
    A_t = sum_l a_t^l ;  A_t /= sum(A_t)                           layer aggregation + global normalisation
Per target: A = prod_t clamp(A_t) renormalised after each product  (token consensus)  [paper §3.2]

Only the target rows are computed (O(|T| H N D) per layer, never N x N), in float32. Options (docs/method.md, "Open
points of the paper, numbered"): ``rollout_norm="column"`` (#4), ``layer_agg="product"`` (#5, builds N x N),
``negative_handling`` (#6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from focus_tool.config import RelevanceConfig
from focus_tool.grid import PatchGrid


def _token_maps(
    values: Sequence[torch.Tensor], tpos: Sequence[int], vis: torch.Tensor, cfg: RelevanceConfig
) -> torch.Tensor:
    """Per-token maps A_t over the P visual positions, (T, P), each row summing to 1 before negative handling.

    Each layer's values are normalised once and the T target rows come from one batched product per layer
    (H x (T, D) @ (D, N)); the per-token maps of the formula, not an N x N matrix.
    """
    if cfg.layer_agg == "product":
        return torch.stack([_token_map_product(values, t, vis, cfg) for t in tpos])
    t_idx = torch.as_tensor(list(tpos), dtype=torch.long)
    acc = torch.zeros((len(t_idx), len(vis)), dtype=torch.float32)  # (T, P)
    for v in values:  # each (H, N, D)
        vn = F.normalize(v.float(), dim=-1).cpu()  # (H, N, D)
        s = torch.bmm(vn[:, t_idx], vn.transpose(1, 2)).sum(0)  # (T, N) sum of per-head cosines
        if cfg.clamp_similarity:
            s = s.clamp_min(0)
        if cfg.rollout_norm == "row":
            acc += s[:, vis] / (s.sum(-1, keepdim=True) + 1.0)
        else:  # column: each visual token divided by its own row sum (symmetric S + I)
            col = torch.bmm(vn[:, vis], vn.transpose(1, 2)).sum(0).sum(-1) + 1.0  # (P,)
            acc += s[:, vis] / col
    total = acc.sum(-1, keepdim=True)  # (T, 1)
    return torch.where(total != 0, acc / torch.where(total != 0, total, 1.0), acc)


def _token_map_product(values: Sequence[torch.Tensor], t: int, vis: torch.Tensor, cfg: RelevanceConfig) -> torch.Tensor:
    """True attention-rollout mode: the product of the row-normalised (S + I)/2 matrices (N x N per layer)."""
    roll: torch.Tensor | None = None
    for v in values:
        vn = F.normalize(v.float(), dim=-1).cpu()
        s = torch.einsum("hid,hjd->ij", vn, vn)  # (N, N)
        r = (s + torch.eye(s.shape[0])) / 2
        r = r / r.sum(-1, keepdim=True) if cfg.rollout_norm == "row" else r / r.sum(0, keepdim=True)
        roll = r if roll is None else r @ roll
    if roll is None:
        raise ValueError("no layers given")
    acc = roll[t, vis]
    return acc / acc.sum()


def relevance_map(
    values: Sequence[torch.Tensor],
    target_positions: Sequence[int],
    visual_positions: Sequence[int],
    cfg: RelevanceConfig,
) -> npt.NDArray[np.float64]:
    """V-V relevance of each visual token for one target phrase.

    Args:
        values: one ``(H_kv, N, D)`` tensor per layer in [l, L) (cached values, or pre-RoPE keys for the K-K
            ablation), batch item already selected.
        target_positions: sequence positions of the target phrase's tokens (|T| >= 1).
        visual_positions: (P,) sequence positions of the visual tokens used for the map, row-major over the grid.
        cfg: map settings.

    Returns:
        (P,) float64 map, non-negative, summing to 1 (all zeros if every entry was clamped away).
    """
    if not target_positions:
        raise ValueError("relevance_map needs at least one target position")
    vis = torch.as_tensor(list(visual_positions), dtype=torch.long)
    tpos = list(target_positions)
    if cfg.map_source == "random":
        gen = np.random.default_rng(cfg.seed)
        m = gen.uniform(0.0, 1.0, size=len(vis))
        return m / m.sum()
    out = torch.ones(len(vis), dtype=torch.float32)  # (P,)
    for a in _token_maps(values, tpos, vis, cfg):  # each (P,)
        if cfg.negative_handling == "clamp":
            a = a.clamp_min(0)
        elif cfg.negative_handling == "minmax":
            a = (a - a.min()) / (a.max() - a.min()).clamp_min(1e-12)
        out = out * a
        s = out.sum()
        out = out / s if s > 0 else out
    return out.double().numpy()


def to_grid(
    map_p: npt.NDArray[np.float64], grid: PatchGrid, cfg: RelevanceConfig
) -> tuple[npt.NDArray[np.float64], PatchGrid]:
    """Reshape a (P,) map to (rows, cols), smooth and downsample if configured, zero the pad band.

    Returns:
        the (rows', cols') map and the grid it lives on (``grid.downsampled(cfg.downsample)``).
    """
    if map_p.size != grid.rows * grid.cols:
        raise ValueError(f"map has {map_p.size} entries but the grid is {grid.rows} x {grid.cols}")
    m = map_p.reshape(grid.rows, grid.cols).astype(np.float64)
    if cfg.mask_padding:
        m = np.where(grid.padding_mask(), 0.0, m)
        total = m.sum()
        m = m / total if total > 0 else m
    if cfg.smooth_sigma > 0:
        m = gaussian_filter(m, cfg.smooth_sigma)
    out_grid = grid.downsampled(cfg.downsample)
    if cfg.downsample > 1:
        m = avg_pool_ceil(m, cfg.downsample)
    if cfg.smooth_sigma > 0 or cfg.downsample > 1:
        total = m.sum()
        m = m / total if total > 0 else m
    return m, out_grid


def gaussian_filter(m: npt.NDArray[np.float64], sigma: float, truncate: float = 2.0) -> npt.NDArray[np.float64]:
    """Separable Gaussian blur with reflect padding, truncated at ``truncate * sigma`` (docs/method.md, Stage III)."""
    radius = max(1, int(truncate * sigma + 0.5))
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(m, radius, mode="reflect") if min(m.shape) > radius else np.pad(m, radius, mode="edge")
    tmp = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, tmp)


def avg_pool_ceil(m: npt.NDArray[np.float64], f: int) -> npt.NDArray[np.float64]:
    """f x f average pooling in ceil mode (partial windows average their real cells)."""
    rows, cols = -(-m.shape[0] // f), -(-m.shape[1] // f)
    out = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            out[i, j] = m[i * f : (i + 1) * f, j * f : (j + 1) * f].mean()
    return out
