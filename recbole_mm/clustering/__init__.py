"""Clustering for recbole_mm: k-means on CPU and GPU, and MISSRec's reference-compatible minibatch k-means.

>>> from recbole_mm.clustering import kmeans, kmeans_reference
>>> res = kmeans(x, 64, n_iter=20)            # res.labels [n], res.centroids [64, d], res.inertia, res.n_iter
>>> ref = kmeans_reference(tokens, 4385)      # MISSRec / TorchPQ behaviour, quirks included
"""

from recbole_mm.clustering.kmeans import kmeans
from recbole_mm.clustering.reference import kmeans_reference
from recbole_mm.clustering.result import ClusteringError, KMeansResult

__all__ = ["kmeans", "kmeans_reference", "KMeansResult", "ClusteringError"]
