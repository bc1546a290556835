"""The published labels (docs/FORMAT.md, section 4): lambda-weighted one-hot rows of the private images."""

from __future__ import annotations

import numpy as np

__all__ = ["weighted_labels"]


def weighted_labels(lam: np.ndarray, private_labels: np.ndarray, private_index: np.ndarray, n_classes: int) -> np.ndarray:
    """float32 (N, C): sum of lam_j * onehot(label of private image j), as in the 2020 release.

    Public patches contribute nothing and rows are not renormalised; two private images of one
    class add in one column (in float64, then rounded once to float32).
    """
    out = np.zeros((len(lam), n_classes))
    rows = np.arange(len(lam))
    for j in range(private_index.shape[1]):
        np.add.at(out, (rows, private_labels[private_index[:, j]]), lam[:, j].astype(np.float64))
    return out.astype(np.float32)
