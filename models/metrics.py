"""Reconstruction metrics: volume IoU, Chamfer distance, F-score, colour error."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def volume_iou(pred_sdf: np.ndarray, gt_sdf: np.ndarray) -> float:
    a, b = pred_sdf < 0, gt_sdf < 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def surface_distances(pred_pts: np.ndarray, gt_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour distances pred->gt and gt->pred."""
    return cKDTree(gt_pts).query(pred_pts, workers=-1)[0], cKDTree(pred_pts).query(gt_pts, workers=-1)[0]


def chamfer(d_pred: np.ndarray, d_gt: np.ndarray) -> float:
    """Symmetric Chamfer-L1: mean of the two mean nearest-neighbour distances (asset units)."""
    return float(0.5 * (d_pred.mean() + d_gt.mean()))


def fscore(d_pred: np.ndarray, d_gt: np.ndarray, tau: float) -> float:
    precision, recall = float((d_pred < tau).mean()), float((d_gt < tau).mean())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
