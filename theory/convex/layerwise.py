r"""Greedy layerwise training by convex steps ("convex DGL"): every block a globally solved two-layer program.

Block :math:`k` takes the detached features :math:`H_{k-1}` (``H_0 = X``), appends a
column of ones (its biases), and solves, for every output column :math:`c` of
the targets (one-vs-all scalar programs on the one-hot labels, squared loss),
the two-layer ReLU program of :mod:`theory.convex.relu` whose output is the
block's auxiliary head. Its recovered neurons :math:`U_{k,c}` (all classes
together, ``m_k`` rows) give the features passed up,
:math:`H_k = \mathrm{relu}([H_{k-1}, 1]\,U_k^T)`, and its heads :math:`\alpha_{k,c}`
the block's prediction :math:`\hat Y_k = \big[H_k^{(c)}\alpha_{k,c}\big]_c`.

Proposition 3.1 of Belilovsky et al. (2019) with weight decay (ours): the
identity is representable, since :math:`H_k \ge 0` and the all-ones pattern
:math:`D = I` is among the patterns (the bias column's gate realises it), the
point :math:`v = \alpha_{k,c}^+`, :math:`w = \alpha_{k,c}^-` (on the coordinates of
class :math:`c`'s neurons) is feasible for block :math:`k+1`'s program and
reproduces :math:`\hat y_{k,c}`. So its optimum obeys

.. math:: p^*_{k+1,c} \le \tfrac12\lVert\hat y_{k,c} - y_c\rVert^2
          + \beta\big(\lVert\alpha_{k,c}^+\rVert + \lVert\alpha_{k,c}^-\rVert\big),

and with :math:`\beta \to 0` the training risk does not increase block by block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .relu import two_layer_relu, two_layer_relu_columns


def with_bias(H) -> np.ndarray:
    """``[H, 1]``: the block's input with its bias column."""
    H = np.asarray(H, dtype=float)
    return np.concatenate([H, np.ones((H.shape[0], 1))], axis=1)


@dataclass
class ConvexBlock:
    """One block: neurons ``U`` ``(m, d + 1)`` (bias last), per-class ``heads`` and the columns they read."""

    U: np.ndarray
    heads: list  # alpha_c (m_c,) per class
    columns: list  # indices into the m neurons, per class
    objectives: list  # p*_{k,c} per class
    certificates: list
    beta: float

    def features(self, H) -> np.ndarray:
        """:math:`\\mathrm{relu}([H, 1] U^T)` ``(n, m)``: what the block passes up."""
        return np.maximum(with_bias(H) @ self.U.T, 0.0)

    def predict(self, H) -> np.ndarray:
        """The block's auxiliary head on its input ``H``: ``(n, k)``."""
        F = self.features(H)
        return np.stack([F[:, cols] @ a for cols, a in zip(self.columns, self.heads)], axis=1)


def one_vs_all(H, Y, beta: float, *, arrangements=40, solver: str = "auto", seed: int = 0) -> ConvexBlock:
    """One block: the scalar program of every column of ``Y`` ``(n, k)`` on ``[H, 1]`` (module docstring).

    With cvxpy (``solver`` ``"auto"`` or ``"cvxpy"``) all classes use the same sampled patterns and one
    compiled program (:func:`theory.convex.relu.two_layer_relu_columns`).
    """
    Xb = with_bias(H)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] != Xb.shape[0]:
        raise ValueError(f"Y must be (n, k) with n = {Xb.shape[0]} rows, got shape {np.shape(Y)}")
    neurons, heads, columns, objectives, certs = [], [], [], [], []
    start = 0
    if solver in ("auto", "cvxpy"):  # the classes share the block's patterns and one compiled program
        solutions = two_layer_relu_columns(Xb, Y, beta, arrangements=arrangements, seed=seed)
    else:
        solutions = [two_layer_relu(Xb, Y[:, c], beta, arrangements=arrangements, solver=solver, seed=seed)
                     for c in range(Y.shape[1])]
    for sol in solutions:
        U, alpha = sol.network()
        neurons.append(U)
        heads.append(alpha)
        columns.append(np.arange(start, start + len(alpha)))
        start += len(alpha)
        objectives.append(sol.objective)
        certs.append(sol.certificate)
    U = np.concatenate(neurons, axis=0) if start else np.zeros((0, Xb.shape[1]))
    return ConvexBlock(U, heads, columns, objectives, certs, float(beta))


def _all_features(block: ConvexBlock, H) -> np.ndarray:
    return block.features(H)


#: What a block passes up (a seam for the Prop. 3.1 claim's sabotage).
_FEATURES = _all_features


@dataclass
class ConvexGreedy:
    """The trained blocks and, per block, the training risk, bound of Prop. 3.1 and certificates."""

    blocks: list = field(default_factory=list)
    risks: list = field(default_factory=list)  # (1/2n) ||Y_hat_k - Y||_F^2 per block
    objectives: list = field(default_factory=list)  # sum_c p*_{k,c} per block
    bounds: list = field(default_factory=list)  # sum_c (bound of Prop 3.1 for block k from block k-1)
    bound_violations: list = field(default_factory=list)  # max_c (p*_{k,c} - bound_c) / max(1, bound_c)

    def predict(self, X, upto: int | None = None) -> np.ndarray:
        """The auxiliary head of block ``upto`` (default the last) on data ``X``."""
        H = np.asarray(X, dtype=float)
        blocks = self.blocks[: (len(self.blocks) if upto is None else upto)]
        for block in blocks[:-1]:
            H = block.features(H)
        return blocks[-1].predict(H)


def convex_greedy(X, Y, beta: float, n_blocks: int, *, arrangements=40, solver: str = "auto",
                  seed: int = 0) -> ConvexGreedy:
    r"""Train ``n_blocks`` blocks greedily, each by :func:`one_vs_all` (module docstring).

    ``Y`` ``(n, k)`` (one-hot labels, or any real targets; a vector is one column).
    """
    if not (isinstance(n_blocks, (int, np.integer)) and n_blocks >= 1):
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    n = Y.shape[0]
    out = ConvexGreedy()
    H = np.asarray(X, dtype=float)
    previous = None
    for k in range(n_blocks):
        block = one_vs_all(H, Y, beta, arrangements=arrangements, solver=solver, seed=seed + 1000 * k)
        pred = block.predict(H)
        out.blocks.append(block)
        out.risks.append(float(np.sum((pred - Y) ** 2) / (2 * n)))
        out.objectives.append(float(np.sum(block.objectives)))
        if previous is not None:
            prev_block, prev_pred = previous
            bounds = [0.5 * float(np.sum((prev_pred[:, c] - Y[:, c]) ** 2))
                      + beta * (np.linalg.norm(np.maximum(a, 0)) + np.linalg.norm(np.minimum(a, 0)))
                      for c, a in enumerate(prev_block.heads)]
            out.bounds.append(float(np.sum(bounds)))
            out.bound_violations.append(max((p - b) / max(1.0, b) for p, b in zip(block.objectives, bounds)))
        previous = (block, pred)
        H = _FEATURES(block, H)
    return out
