r"""Greedy layerwise training by convex steps ("convex DGL"): every block a globally solved two-layer program.

Block :math:`k` takes the detached features :math:`H_{k-1}` (``H_0 = X``), appends a
column of ones (its biases), and solves, for every output column :math:`c` of
the targets (one-vs-all scalar programs on the one-hot labels, squared loss),
the two-layer ReLU program of :mod:`theory.convex.relu` whose output is the
block's auxiliary head. Its recovered neurons :math:`U_{k,c}` (all classes
together, ``m_k`` rows) give the features passed up,
:math:`H_k = \mathrm{relu}([H_{k-1}, 1]\,U_k^T)`, and its heads :math:`\alpha_{k,c}`
the block's prediction :math:`\hat Y_k = \big[H_k^{(c)}\alpha_{k,c}\big]_c`. With ``head="vector"``
a block is instead one vector-output network, all classes reading one hidden layer
(:func:`vector_block`, :mod:`theory.convex.vector`).

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

from .relu import ReluCertificate, two_layer_relu, two_layer_relu_columns


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


def vector_block(H, Y, beta: float, *, arrangements=40, solver: str = "auto", seed: int = 0,
                 polish_steps: int = 500) -> ConvexBlock:
    r"""One block with a shared hidden layer: :func:`theory.convex.vector.two_layer_relu_vector` on ``[H, 1]``.

    The identity on the columns of ``H`` is offered to the refit, so with ``H >= 0`` the block's
    objective is at most the previous block's loss plus :math:`\beta\sum_j\lVert a_j\rVert` (Prop. 3.1
    for the vector head, up to the refit's tolerance). Its one "certificate" holds the sandwich: the
    network's objective and the certified gated lower bound over the sampled patterns (loose: a bound
    for the networks whose patterns were sampled, not for every network; the gated program is solved to a
    relative gap of 1e-4 only: it supplies the directions, the refit and the polish the network).
    """
    from .vector import two_layer_relu_vector

    Xb = with_bias(H)
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[0] != Xb.shape[0]:
        raise ValueError(f"Y must be (n, k) with n = {Xb.shape[0]} rows, got shape {np.shape(Y)}")
    identity = np.eye(Xb.shape[1])[:-1]
    sol = two_layer_relu_vector(Xb, Y, beta, arrangements=arrangements, solver=solver, seed=seed,
                                extra_directions=identity, polish_steps=polish_steps, gated_tolerance=1e-4)
    U, A = sol.network()
    cert = ReluCertificate(sol.upper_bound, sol.lower_bound, sol.gap, 0.0, sol.status, 1e-6)
    columns = np.arange(U.shape[0])
    return ConvexBlock(U, [A[:, c] for c in range(Y.shape[1])], [columns] * Y.shape[1], [sol.upper_bound], [cert],
                       float(beta))


HEADS = ("ova", "vector")


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
                  seed: int = 0, head: str = "ova") -> ConvexGreedy:
    r"""Train ``n_blocks`` blocks greedily, each by :func:`one_vs_all` (module docstring) or, with
    ``head="vector"``, by :func:`vector_block` (one shared hidden layer for all outputs).

    ``Y`` ``(n, k)`` (one-hot labels, or any real targets; a vector is one column).
    """
    if not (isinstance(n_blocks, (int, np.integer)) and n_blocks >= 1):
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    fit_block = one_vs_all if head == "ova" else vector_block
    Y = np.asarray(Y, dtype=float)
    Y = Y[:, None] if Y.ndim == 1 else Y
    n = Y.shape[0]
    out = ConvexGreedy()
    H = np.asarray(X, dtype=float)
    previous = None
    for k in range(n_blocks):
        block = fit_block(H, Y, beta, arrangements=arrangements, solver=solver, seed=seed + 1000 * k)
        pred = block.predict(H)
        out.blocks.append(block)
        out.risks.append(float(np.sum((pred - Y) ** 2) / (2 * n)))
        out.objectives.append(float(np.sum(block.objectives)))
        if previous is not None:
            prev_block, prev_pred = previous
            if head == "ova":
                bounds = [0.5 * float(np.sum((prev_pred[:, c] - Y[:, c]) ** 2))
                          + beta * (np.linalg.norm(np.maximum(a, 0)) + np.linalg.norm(np.minimum(a, 0)))
                          for c, a in enumerate(prev_block.heads)]
            else:  # the identity neurons e_j with output rows a_j: beta sum_j ||a_j||
                heads = np.stack(prev_block.heads, axis=1)
                bounds = [0.5 * float(np.sum((prev_pred - Y) ** 2))
                          + beta * float(np.sum(np.linalg.norm(heads, axis=1)))]
            out.bounds.append(float(np.sum(bounds)))
            out.bound_violations.append(max((p - b) / max(1.0, b) for p, b in zip(block.objectives, bounds)))
        previous = (block, pred)
        H = _FEATURES(block, H)
    return out
