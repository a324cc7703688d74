"""Result type and error type shared by every k-means backend."""

from typing import NamedTuple, Union

import torch

from recbole_mm.errors import RecBoleMMError


class ClusteringError(RecBoleMMError, ValueError):
    """Bad input to :func:`recbole_mm.clustering.kmeans` or an unavailable backend asked for by name."""


class KMeansResult(NamedTuple):
    """Outcome of one k-means run.

    Attributes:
        labels: ``LongTensor [n]`` (or ``[B, n]`` in batched mode; ``-1`` at padded positions): index of the
            nearest returned centroid of each point.
        centroids: ``[k, d]`` (or ``[B, k, d]``), dtype of the computation (float32 or float64).
        inertia: sum over points of the squared Euclidean distance to their centroid (cosine mode: sum of
            ``1 - cos``), accumulated in float64; a ``float``, or a float64 ``Tensor [B]`` in batched mode.
        n_iter: number of centroid updates performed (passes over the data in mini-batch mode).
    """

    labels: torch.Tensor
    centroids: torch.Tensor
    inertia: Union[float, torch.Tensor]
    n_iter: int
