"""Reconstruction metrics: volume IoU, Chamfer distance, F-score, colour error, and the share
of a shape in its largest connected part."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from .geometry import inside_parts


def volume_iou(pred_sdf: np.ndarray, gt_sdf: np.ndarray) -> float:
    a, b = pred_sdf < 0, gt_sdf < 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def largest_part_share(sdf_grid: np.ndarray) -> float:
    """Share of the inside voxels (sdf < 0) in the largest connected part (`geometry.inside_parts`):
    1.0 for a shape in one piece, lower with floaters and parts broken off. 0.0 for an empty grid."""
    sizes = inside_parts(sdf_grid)[1]
    return float(sizes.max() / sizes.sum()) if len(sizes) else 0.0


def surface_distances(pred_pts: np.ndarray, gt_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances pred->gt and gt->pred."""
    return cKDTree(gt_pts).query(pred_pts, workers=-1)[0], cKDTree(pred_pts).query(gt_pts, workers=-1)[0]


def chamfer(d_pred: np.ndarray, d_gt: np.ndarray) -> float:
    """Symmetric Chamfer-L1: mean of the two mean nearest-neighbour distances (asset units)."""
    return float(0.5 * (d_pred.mean() + d_gt.mean()))


def fscore(d_pred: np.ndarray, d_gt: np.ndarray, tau: float) -> float:
    precision, recall = float((d_pred < tau).mean()), float((d_gt < tau).mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
