r"""The clustering step of the layerwise algorithm: k-means, its cluster count, and the adjusted Rand index.

* :func:`kmeans`: k-means (:func:`scipy.cluster.vq.kmeans2`, ``++`` init, best of
  ``restarts``), optionally oversampled and merged by Ward's linkage (a departure
  from the paper, which clusters into the alphabet size directly);
* :func:`estimate_n_clusters`: the number of clusters chosen from the data, without
  the true alphabet size, by the mean silhouette (Rousseeuw 1987) over a range of
  candidate counts, or by the gap statistic (Tibshirani, Walther & Hastie 2001,
  :func:`gap_statistic`);
* :func:`random_clustering`: a control that assigns every point a uniformly random
  cluster (the "broken clustering" sabotage of the claims);
* :func:`adjusted_rand_index`: recovery of a level, invariant to renaming clusters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .backend import shared_rng
from .lazy import lazy_callable

# scipy is imported at the first call (sim.lazy: bbp list starts fast)
fcluster = lazy_callable("scipy.cluster.hierarchy", "fcluster")
linkage = lazy_callable("scipy.cluster.hierarchy", "linkage")
kmeans2 = lazy_callable("scipy.cluster.vq", "kmeans2")
vq = lazy_callable("scipy.cluster.vq", "vq")
cdist = lazy_callable("scipy.spatial.distance", "cdist")

#: How the number of clusters of a level is set: the true alphabet size (``given``) or from the data.
CLUSTER_COUNTS = ("given", "silhouette", "gap")


# --------------------------------------------------------------------------------------------
# adjusted Rand index and k-means
# --------------------------------------------------------------------------------------------

def contingency_table(labels_true, labels_pred) -> np.ndarray:
    r"""The contingency table :math:`n_{ij} = \#\{t : a_t = i, b_t = j\}` of two labellings (renumbered)."""
    a, b = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labellings must have the same number of items, got {a.size} and {b.size}")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    n_a, n_b = (int(ai.max()) + 1, int(bi.max()) + 1) if a.size else (0, 0)
    return np.bincount(ai * n_b + bi, minlength=n_a * n_b).reshape(n_a, n_b)


def adjusted_rand_index(labels_true, labels_pred) -> float:
    r"""Adjusted Rand index (Hubert & Arabie 1985) of two labellings of the same items.

    With the contingency table :math:`n_{ij}`, row sums :math:`a_i`, column sums
    :math:`b_j` and :math:`n` items,

    .. math:: \mathrm{ARI} = \frac{\sum_{ij}\binom{n_{ij}}2 - E}{\tfrac12\big(\sum_i\binom{a_i}2
              + \sum_j\binom{b_j}2\big) - E},\qquad
              E = \frac{\sum_i\binom{a_i}2\sum_j\binom{b_j}2}{\binom n2}.

    It is 1 for identical partitions (up to renaming), about 0 for independent
    ones, and can be negative. When both partitions are trivial (the denominator
    vanishes) it is 1.
    """
    table = contingency_table(labels_true, labels_pred).astype(float)
    n = table.sum()
    if n < 2:
        return 1.0

    def pairs(v):
        return v * (v - 1) / 2

    index = pairs(table).sum()
    rows, cols = pairs(table.sum(axis=1)).sum(), pairs(table.sum(axis=0)).sum()
    expected = rows * cols / pairs(n)
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


@dataclass(frozen=True)
class Clustering:
    """k-means centroids ``(M, dim)`` and the cluster ``groups[i]`` in ``[0, K)`` of each centroid."""

    centroids: np.ndarray
    groups: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(self.groups.max()) + 1

    def assign(self, points: np.ndarray) -> np.ndarray:
        """The cluster of each point ``(n, dim)``: the group of its nearest centroid."""
        return self.groups[vq(np.asarray(points, dtype=float), self.centroids)[0]]


def kmeans(points: np.ndarray, n_clusters: int, *, seed: int = 0, restarts: int = 3, max_points: int = 20000,
           oversample: int | tuple = 1) -> tuple[Clustering, np.ndarray]:
    r"""k-means clustering with :func:`scipy.cluster.vq.kmeans2` (``++`` init), best of ``restarts``.

    Minimises :math:`\sum_t \min_c \lVert x_t - \mu_c\rVert^2`. The centroids are fitted
    on at most ``max_points`` points drawn at random (all when fewer), then every
    point is assigned to its nearest centroid.

    With ``oversample = r > 1``, k-means finds :math:`r K` clusters and Ward's
    agglomerative linkage of their centroids (:func:`scipy.cluster.hierarchy.linkage`)
    groups them into :math:`K` clusters. This keeps k-means from splitting one large
    spread-out cluster (say, blank patches with pixel noise) while it merges small
    distinct ones.

    Returns
    -------
    clustering : Clustering
    labels : ``(n_points,)`` ints in ``[0, K)``
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or not np.all(np.isfinite(points)):
        raise ValueError(f"points must be a finite (n_points, dim) array, got shape {points.shape}")
    if isinstance(n_clusters, bool) or not 1 <= int(n_clusters) <= len(points):
        raise ValueError(f"n_clusters must be in [1, n_points = {len(points)}], got {n_clusters!r}")
    if isinstance(oversample, bool) or int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample!r}")
    n_clusters = int(n_clusters)
    rng = shared_rng(seed, "extra")
    fit = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
    n_fit = min(len(fit), n_clusters * int(oversample))
    best, best_cost = None, np.inf
    for _ in range(max(1, int(restarts))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an emptied cluster keeps its centroid
            centroids, _ = kmeans2(fit, n_fit, iter=30, minit="++", rng=rng)
        _, dist = vq(fit, centroids)
        cost = float(np.sum(dist ** 2))
        if cost < best_cost:
            best, best_cost = centroids, cost
    if n_fit > n_clusters:
        groups = fcluster(linkage(best, method="ward"), n_clusters, criterion="maxclust") - 1
        groups = np.unique(groups, return_inverse=True)[1]  # numbered 0 .. K-1 without gaps
    else:
        groups = np.arange(n_fit)
    clustering = Clustering(best, groups.astype(np.int64))
    return clustering, clustering.assign(points)




# --------------------------------------------------------------------------------------------
# the number of clusters from the data, and a broken clustering (control)
# --------------------------------------------------------------------------------------------

def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    r"""Mean silhouette (Rousseeuw 1987) of a clustering of ``points`` ``(n, dim)``.

    For point :math:`i` in cluster :math:`A`, :math:`a_i` is its mean distance to the
    other points of :math:`A` and :math:`b_i = \min_{B \ne A}` its mean distance to
    the points of :math:`B`; :math:`s_i = (b_i - a_i)/\max(a_i, b_i)` (0 in a singleton
    cluster, and 0 where both vanish). Returns :math:`\frac1n\sum_i s_i` in ``[-1, 1]``;
    ``-1`` when there is only one cluster.
    """
    points, labels = np.asarray(points, dtype=float), np.unique(np.asarray(labels), return_inverse=True)[1]
    k = int(labels.max()) + 1 if labels.size else 0
    if k < 2:
        return -1.0
    dist = cdist(points, points)
    sums = np.stack([dist[:, labels == c].sum(axis=1) for c in range(k)], axis=1)
    counts = np.bincount(labels, minlength=k).astype(float)
    own = counts[labels]
    a = sums[np.arange(len(points)), labels] / np.maximum(own - 1, 1)
    mean_other = sums / counts
    mean_other[np.arange(len(points)), labels] = np.inf
    b = mean_other.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(own > 1, (b - a) / np.maximum(a, b), 0.0)
    return float(np.mean(np.nan_to_num(s)))


def estimate_n_clusters(points: np.ndarray, candidates, *, seed: int = 0, restarts: int = 3, max_points: int = 1500,
                        oversample: int = 1) -> tuple[int, dict]:
    r"""The number of clusters with the largest mean silhouette among ``candidates`` (no true alphabet size).

    For every candidate :math:`K`, :func:`kmeans` clusters ``points`` and
    :func:`silhouette` scores the clustering of a random subsample of at most
    ``max_points`` points; the estimate is :math:`\arg\max_K` of the score.
    Returns ``(K, {K: score})``.
    """
    candidates = sorted({int(k) for k in candidates})
    points = np.asarray(points, dtype=float)
    if not candidates or candidates[0] < 2 or candidates[-1] > len(points):
        raise ValueError(f"candidates must be cluster counts from 2 to n_points = {len(points)}, got {candidates}")
    rng = shared_rng(seed, "extra")
    sub = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
    scores = {}
    for k in candidates:
        clustering, _ = kmeans(points, k, seed=seed, restarts=restarts, oversample=oversample)
        scores[k] = silhouette(sub, clustering.assign(sub))
    return max(scores, key=scores.get), scores


def within_dispersion(points: np.ndarray, labels: np.ndarray) -> float:
    r"""The pooled within-cluster sum of squares :math:`W = \sum_r \sum_{t \in C_r} \lVert x_t - \bar x_r\rVert^2`.

    This is Tibshirani et al.'s :math:`W_k = \sum_r D_r / (2 n_r)`, since the sum
    :math:`D_r` of squared pairwise distances in cluster :math:`r` is :math:`2 n_r`
    times its sum of squares about the mean :math:`\bar x_r`.
    """
    points = np.asarray(points, dtype=float)
    labels = np.unique(np.asarray(labels), return_inverse=True)[1]
    k = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=k).astype(float)
    means = np.stack([np.bincount(labels, weights=points[:, d], minlength=k) for d in range(points.shape[1])],
                     axis=1) / np.maximum(counts, 1)[:, None]
    return float(np.sum((points - means[labels]) ** 2))


def reference_draws(points: np.ndarray, n_references: int, *, reference: str = "pca", seed: int = 0) -> np.ndarray:
    r"""``n_references`` uniform reference data sets ``(B, n, dim)`` for the gap statistic.

    ``reference="box"``: uniform in the bounding box of ``points`` (each feature over its
    range). ``reference="pca"``: uniform in the box aligned with the principal axes
    (Tibshirani et al.'s second reference): with the centred data :math:`X - \bar x =
    U D V^\top`, draw :math:`Z'` uniform in the bounding box of :math:`X' = (X - \bar x) V`
    and return :math:`Z' V^\top + \bar x`.
    """
    points = np.asarray(points, dtype=float)
    if reference not in ("pca", "box"):
        raise ValueError(f"reference must be 'pca' or 'box', got {reference!r}")
    rng = shared_rng(seed, "extra")
    centre = points.mean(axis=0)
    if reference == "pca":
        _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
        rotated = (points - centre) @ vt.T
    else:
        vt, rotated = None, points
    lo, hi = rotated.min(axis=0), rotated.max(axis=0)
    draws = rng.uniform(size=(int(n_references), *rotated.shape)) * (hi - lo) + lo
    return draws @ vt + centre if vt is not None else draws


def gap_statistic(points: np.ndarray, candidates, *, n_references: int = 10, reference: str = "pca", seed: int = 0,
                  restarts: int = 3, max_points: int = 1500, oversample: int = 1) -> tuple[int, dict]:
    r"""The number of clusters by the gap statistic (Tibshirani, Walther & Hastie 2001).

    On a random subsample of at most ``max_points`` points, for every candidate
    :math:`k` (in increasing order), :func:`kmeans` clusters the data and each of
    :math:`B` = ``n_references`` uniform reference sets (:func:`reference_draws`, drawn
    once and shared by every :math:`k`), and :func:`within_dispersion` gives
    :math:`W_k` and :math:`W^*_{kb}`. With :math:`\ell_k = \frac1B\sum_b \log W^*_{kb}`,

    .. math:: \mathrm{Gap}(k) = \ell_k - \log W_k,\qquad
              s_k = \sqrt{1 + 1/B}\;\sqrt{\tfrac1B \textstyle\sum_b (\log W^*_{kb} - \ell_k)^2},

    and the estimate is the smallest candidate :math:`k` with
    :math:`\mathrm{Gap}(k) \ge \mathrm{Gap}(k^+) - s_{k^+}`, :math:`k^+` the next
    candidate (the largest candidate when none qualifies). The scan stops at the
    estimate. Returns ``(k, {"gap": {k: Gap(k)}, "s": {k: s_k}})`` for the scanned
    candidates. Candidates may start at 1 (one cluster: :math:`W_1` is the total sum of squares).
    """
    candidates = sorted({int(k) for k in candidates})
    points = np.asarray(points, dtype=float)
    if not candidates or candidates[0] < 1 or candidates[-1] > len(points):
        raise ValueError(f"candidates must be cluster counts from 1 to n_points = {len(points)}, got {candidates}")
    if isinstance(n_references, bool) or int(n_references) < 1:
        raise ValueError(f"n_references must be a positive integer, got {n_references!r}")
    rng = shared_rng(seed, "extra")
    sub = points if len(points) <= max_points else points[rng.choice(len(points), max_points, replace=False)]
    refs = reference_draws(sub, n_references, reference=reference, seed=seed + 1)
    tiny = 1e-300  # log of a zero dispersion (as many distinct points as clusters)
    gaps, sds = {}, {}

    def score(k):
        _, labels = kmeans(sub, k, seed=seed, restarts=restarts, oversample=oversample)
        log_w = np.log(max(within_dispersion(sub, labels), tiny))
        log_ref = np.array([np.log(max(within_dispersion(r, kmeans(r, k, seed=seed + 1 + b, restarts=1)[1]), tiny))
                            for b, r in enumerate(refs)])
        gaps[k] = float(log_ref.mean() - log_w)
        sds[k] = float(np.sqrt(1 + 1 / len(refs)) * log_ref.std())

    score(candidates[0])
    for k, k_next in zip(candidates, candidates[1:]):
        score(k_next)
        if gaps[k] >= gaps[k_next] - sds[k_next]:
            return k, {"gap": gaps, "s": sds}
    return candidates[-1], {"gap": gaps, "s": sds}


@dataclass(frozen=True)
class RandomClustering:
    """A control: every point gets a uniformly random cluster in ``[0, n_clusters)`` (drawn from ``seed``)."""

    n_clusters: int
    seed: int = 0

    def assign(self, points: np.ndarray) -> np.ndarray:
        return shared_rng(self.seed, "extra").integers(0, self.n_clusters, size=len(points))


def random_clustering(points: np.ndarray, n_clusters: int, *, seed: int = 0) -> tuple[RandomClustering, np.ndarray]:
    """The broken clustering (a sabotage): :class:`RandomClustering` and its random labels of ``points``."""
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    clustering = RandomClustering(int(n_clusters), int(seed))
    return clustering, clustering.assign(points)
