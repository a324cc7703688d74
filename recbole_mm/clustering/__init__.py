"""Clustering for recbole_mm: k-means on CPU and GPU, MISSRec's reference-compatible minibatch k-means and its
DPC-KNN alternative.

>>> from recbole_mm.clustering import kmeans, kmeans_reference
>>> res = kmeans(x, 64, n_iter=20)            # res.labels [n], res.centroids [64, d], res.inertia, res.n_iter
>>> ref = kmeans_reference(tokens, 4385)      # MISSRec / TorchPQ behaviour, quirks included
>>> dpc = dpc_knn(tokens, 4385, local_size=877)  # MISSRec's alternative: density peaks, k-NN density
"""

from recbole_mm.clustering.dpc_knn import dpc_knn
from recbole_mm.clustering.kmeans import kmeans
from recbole_mm.clustering.reference import kmeans_reference
from recbole_mm.clustering.result import ClusteringError, KMeansResult

__all__ = ["kmeans", "kmeans_reference", "dpc_knn", "KMeansResult", "ClusteringError"]
