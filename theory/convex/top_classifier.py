r"""Convex per-layer subproblems: the top classifier on fixed features, solved to a certificate.

The layerwise algorithm's top classifier (and any linear readout on frozen
features) is a convex program. With features :math:`X \in \mathbb R^{N \times F}`
(rows :math:`x_n`), one-hot targets :math:`Y \in \{0,1\}^{N \times K}` and
weights :math:`W \in \mathbb R^{F \times K}`, :math:`z_n = x_n W`:

``logistic`` (multinomial logistic regression with L2)
    .. math:: P(W) = \frac1N \sum_n \Big[\log\sum_k e^{z_{nk}} - z_{n y_n}\Big] + \frac\lambda2 \lVert W\rVert_F^2
``squared_hinge`` (one-vs-rest squared hinge with L2; :math:`t_{nk} = 2Y_{nk} - 1`)
    .. math:: P(W) = \frac1N \sum_{n,k} \max(0,\, 1 - t_{nk} z_{nk})^2 + \frac\lambda2 \lVert W\rVert_F^2

Both are :math:`\lambda`-strongly convex, so the minimiser is unique.

Certificates
------------
Every solution comes with a :class:`Certificate` computed from the returned
weights alone, whatever solver produced them:

* the KKT residual :math:`\lVert\nabla P(W)\rVert_F` (the problem is unconstrained
  and differentiable), and the strong-convexity bound
  :math:`P(W) - P^* \le \lVert\nabla P(W)\rVert_F^2 / (2\lambda)`;
* the Fenchel duality gap :math:`P(W) - D(\beta(W)) \ge P(W) - P^*`, with the dual
  point :math:`\beta = -\partial\ell/\partial z` read off the primal
  (:func:`dual_objective`):

  .. math:: D(\beta) = -\frac1N\sum_n \ell_n^*(-\beta_n) - \frac{1}{2\lambda N^2}\lVert X^T\beta\rVert_F^2,

  where for ``logistic`` :math:`\beta_n = y_n - \mathrm{softmax}(z_n)` and
  :math:`\ell^*_n(-\beta_n) = -H(\mathrm{softmax}(z_n))` (entropy), and for
  ``squared_hinge`` :math:`a_{nk} = t_{nk}\beta_{nk} = 2\max(0, 1 - t_{nk} z_{nk})` and
  :math:`\ell^*_n(-\beta_n) = \sum_k (a_{nk}^2/4 - a_{nk})`;
* and, for cvxpy, the solver's status.

Which solver when
-----------------
``cvxpy`` (reference, small problems)
    The program is written once with cvxpy ``Parameter`` s for :math:`X`, the
    targets and :math:`\lambda` (:class:`TopClassifierProblem`); it is compiled on
    the first solve and re-solved for every ensemble member or every
    :math:`\lambda` without recompiling, by Clarabel (an interior-point conic
    solver: exponential cones for ``logistic``, second-order cones for
    ``squared_hinge``). Used by ``method="auto"`` when
    :math:`N K F \le` :data:`CVXPY_MAX_SIZE`.
``lbfgs`` (fast path, large problems)
    :func:`scipy.optimize.minimize` (L-BFGS-B) on the sum of every member's
    objective with the analytic gradient (the members' problems are separable,
    so one run solves them all), to ``gtol``; used by ``method="auto"`` above
    that size. Its certificate is the same KKT residual and duality gap.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from sim.lazy import lazy_callable

minimize = lazy_callable("scipy.optimize", "minimize")  # imported at the first call (sim.lazy)

LOSSES = ("logistic", "squared_hinge")
METHODS = ("auto", "cvxpy", "lbfgs")
#: ``method="auto"`` uses cvxpy when N * K * F is at most this, L-BFGS above.
CVXPY_MAX_SIZE = 200_000


def _check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)}")
    return loss


def _check_problem(features, targets, l2):
    x = np.asarray(features, dtype=float)
    y = np.asarray(targets, dtype=float)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if y.ndim == 2:
        y = np.broadcast_to(y, (x.shape[0], *y.shape))
    if x.ndim != 3 or y.ndim != 3 or y.shape[:2] != x.shape[:2]:
        raise ValueError(f"features must be (N, F) or (E, N, F) and targets one-hot (N, K) or (E, N, K) with the "
                         f"same N, got {np.shape(features)} and {np.shape(targets)}")
    if not (np.all(np.isfinite(x)) and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=-1) == 1)):
        raise ValueError("features must be finite and targets one-hot (one 1 per row)")
    if not (np.isfinite(l2) and l2 > 0):
        raise ValueError(f"l2 must be positive (it makes the problem strongly convex), got {l2!r}")
    return x, y, squeeze


def objective(weights, features, targets, l2: float, loss: str = "logistic"):
    r"""Primal objective :math:`P(W)` ``(E,)`` and its gradient ``(E, F, K)`` (see the module docstring).

    ``weights`` ``(E, F, K)``, ``features`` ``(E, N, F)``, ``targets`` ``(E, N, K)`` one-hot.
    """
    _check_loss(loss)
    w, x, y = (np.asarray(a, dtype=float) for a in (weights, features, targets))
    n = x.shape[-2]
    z = x @ w
    reg = 0.5 * l2 * np.sum(w * w, axis=(-2, -1))
    if loss == "logistic":
        zmax = z.max(axis=-1, keepdims=True)
        lse = zmax[..., 0] + np.log(np.sum(np.exp(z - zmax), axis=-1))
        value = np.mean(lse - np.sum(y * z, axis=-1), axis=-1) + reg
        p = np.exp(z - lse[..., None])
        grad = np.swapaxes(x, -1, -2) @ (p - y) / n + l2 * w
    else:
        t = 2 * y - 1
        slack = np.maximum(0.0, 1 - t * z)
        value = np.sum(slack ** 2, axis=(-2, -1)) / n + reg
        grad = np.swapaxes(x, -1, -2) @ (-2 * t * slack) / n + l2 * w
    return value, grad


def dual_objective(weights, features, targets, l2: float, loss: str = "logistic"):
    r"""Fenchel dual objective :math:`D(\beta(W))` ``(E,)`` at the dual point read off the primal weights.

    Weak duality gives :math:`D(\beta) \le P^* \le P(W)` for every ``W``; the gap
    closes at the optimum (see the module docstring for :math:`\beta` and :math:`\ell^*`).
    """
    _check_loss(loss)
    w, x, y = (np.asarray(a, dtype=float) for a in (weights, features, targets))
    n = x.shape[-2]
    z = x @ w
    if loss == "logistic":
        zs = z - z.max(axis=-1, keepdims=True)
        logp = zs - np.log(np.sum(np.exp(zs), axis=-1, keepdims=True))
        p = np.exp(logp)
        beta = y - p
        conj = np.sum(p * logp, axis=(-2, -1))  # sum_n l*(-beta_n) = -sum_n H(p_n)
    else:
        t = 2 * y - 1
        a = 2 * np.maximum(0.0, 1 - t * z)
        beta = t * a
        conj = np.sum(a * a / 4 - a, axis=(-2, -1))
    xb = np.swapaxes(x, -1, -2) @ beta
    return -conj / n - np.sum(xb * xb, axis=(-2, -1)) / (2 * l2 * n * n)


@dataclass(frozen=True)
class Certificate:
    """Optimality certificate of one member's solution (see the module docstring).

    ``holds`` when the solver reports success (``optimal``, or ``optimal_inaccurate``:
    Clarabel's own stopping test can miss on rank-deficient one-hot features, and
    the gap below is what certifies the point) and the duality gap is at most
    ``tolerance`` (relative to ``max(1, |P|)``).
    """

    method: str
    status: str
    primal: float
    dual: float
    duality_gap: float
    kkt_residual: float
    suboptimality_bound: float
    tolerance: float
    seconds: float

    @property
    def holds(self) -> bool:
        ok_status = self.status in ("optimal", "optimal_inaccurate", "converged")
        return bool(ok_status and np.isfinite(self.duality_gap)
                    and self.duality_gap <= self.tolerance * max(1.0, abs(self.primal)))


def certify(weights, features, targets, l2: float, loss: str = "logistic", *, method: str = "given",
            status: str = "optimal", tolerance: float = 1e-6, seconds: float = 0.0) -> list[Certificate]:
    """Certificates ``[E]`` of given weights ``(E, F, K)``: primal, dual, gap, KKT residual and bound."""
    x, y, _ = _check_problem(features, targets, l2)
    w = np.asarray(weights, dtype=float).reshape(x.shape[0], x.shape[-1], y.shape[-1])
    primal, grad = objective(w, x, y, l2, loss)
    dual = dual_objective(w, x, y, l2, loss)
    kkt = np.sqrt(np.sum(grad * grad, axis=(-2, -1)))
    statuses = [status] * x.shape[0] if isinstance(status, str) else list(status)
    return [Certificate(method, statuses[m], float(primal[m]), float(dual[m]), float(primal[m] - dual[m]),
                        float(kkt[m]), float(kkt[m] ** 2 / (2 * l2)), tolerance, seconds / x.shape[0])
            for m in range(x.shape[0])]


@dataclass
class Solution:
    """Weights ``(E, F, K)`` (or ``(F, K)`` for unbatched input), objective values ``(E,)`` and certificates."""

    weights: np.ndarray
    objective: np.ndarray
    certificates: list = field(default_factory=list)
    method: str = ""

    @property
    def certified(self) -> bool:
        return all(c.holds for c in self.certificates)


class TopClassifierProblem:
    r"""The top classifier as a cvxpy problem, compiled once and re-solved with new data.

    Parameters (cvxpy ``Parameter`` s, DPP): the features :math:`X` ``(N, F)``, the
    regularisation :math:`\lambda`, and for ``logistic`` the matrix
    :math:`C = X^T Y / N` (so that :math:`\frac1N\sum_n z_{n y_n} = \langle C, W\rangle`), for
    ``squared_hinge`` one matrix :math:`A_k = \mathrm{diag}(t_{:k}) X` per class (so that
    the margins are :math:`A_k w_k`). :meth:`solve` sets them and calls Clarabel;
    only the first call compiles.
    """

    def __init__(self, n_samples: int, n_features: int, n_classes: int, loss: str = "logistic"):
        import cvxpy as cp

        self.loss = _check_loss(loss)
        self.shape = (int(n_samples), int(n_features), int(n_classes))
        n, f, k = self.shape
        if min(self.shape) < 1 or k < 2:
            raise ValueError(f"need N, F >= 1 and K >= 2, got {self.shape}")
        self.x = cp.Parameter((n, f), name="features")
        self.l2 = cp.Parameter(nonneg=True, name="l2")
        self.w = cp.Variable((f, k), name="weights")
        reg = self.l2 / 2 * cp.sum_squares(self.w)
        if loss == "logistic":
            self.c = cp.Parameter((f, k), name="XtY_over_N")
            data = cp.sum(cp.log_sum_exp(self.x @ self.w, axis=1)) / n - cp.sum(cp.multiply(self.c, self.w))
        else:
            self.a = [cp.Parameter((n, f), name=f"signed_features_{j}") for j in range(k)]
            data = sum(cp.sum_squares(cp.pos(1 - self.a[j] @ self.w[:, j])) for j in range(k)) / n
        self.problem = cp.Problem(cp.Minimize(data + reg))
        if not self.problem.is_dpp():  # pragma: no cover - guards the formulation
            raise RuntimeError("the top-classifier problem is not DPP; it would be recompiled at every solve")
        self.n_solves = 0

    def solve(self, features, targets, l2: float, *, tolerance: float = 1e-6) -> tuple[np.ndarray, Certificate]:
        """Solve for one member: ``features`` ``(N, F)``, one-hot ``targets`` ``(N, K)``; returns ``(W, cert)``."""
        x, y, _ = _check_problem(features, targets, l2)
        x, y = x[0], y[0]
        if (x.shape[0], x.shape[1], y.shape[1]) != self.shape:
            raise ValueError(f"this problem was compiled for (N, F, K) = {self.shape}, got "
                             f"{(x.shape[0], x.shape[1], y.shape[1])}")
        n = x.shape[0]
        self.x.value = x
        self.l2.value = float(l2)
        if self.loss == "logistic":
            self.c.value = x.T @ y / n
        else:
            t = 2 * y - 1
            for j, a in enumerate(self.a):
                a.value = t[:, j:j + 1] * x
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimal_inaccurate" is reported in the status and judged by the gap
            self.problem.solve(solver="CLARABEL")
        seconds = time.perf_counter() - start
        self.n_solves += 1
        w = np.asarray(self.w.value if self.w.value is not None else np.full(self.w.shape, np.nan))
        cert = certify(w[None], x[None], y[None], l2, self.loss, method="cvxpy", status=str(self.problem.status),
                       tolerance=tolerance, seconds=seconds)[0]
        return w, cert


def solve_cvxpy(features, targets, l2: float, loss: str = "logistic", *, tolerance: float = 1e-6,
                problem: TopClassifierProblem | None = None) -> Solution:
    """Solve every member's problem with cvxpy + Clarabel, compiling the program once for all members."""
    x, y, squeeze = _check_problem(features, targets, l2)
    problem = TopClassifierProblem(x.shape[1], x.shape[2], y.shape[2], loss) if problem is None else problem
    weights, certs = [], []
    for m in range(x.shape[0]):
        w, cert = problem.solve(x[m], y[m], l2, tolerance=tolerance)
        weights.append(w)
        certs.append(cert)
    weights = np.stack(weights)
    return Solution(weights[0] if squeeze else weights, np.asarray([c.primal for c in certs]), certs, "cvxpy")


def solve_lbfgs(features, targets, l2: float, loss: str = "logistic", *, gtol: float = 1e-9,
                max_iter: int = 5000, tolerance: float = 1e-6, init=None) -> Solution:
    r"""Minimise :math:`\sum_m P_m(W_m)` with L-BFGS-B (analytic gradient), every member at once."""
    x, y, squeeze = _check_problem(features, targets, l2)
    e, _, f = x.shape
    k = y.shape[-1]
    w0 = np.zeros((e, f, k)) if init is None else np.asarray(init, dtype=float).reshape(e, f, k)

    def fun(flat):
        value, grad = objective(flat.reshape(e, f, k), x, y, l2, loss)
        return float(value.sum()), grad.ravel()

    start = time.perf_counter()
    res = minimize(fun, w0.ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter), "gtol": gtol, "ftol": 1e-15, "maxcor": 30})
    seconds = time.perf_counter() - start
    w = res.x.reshape(e, f, k)
    status = "converged" if res.success else f"stopped: {res.message}"
    certs = certify(w, x, y, l2, loss, method="lbfgs", status=status, tolerance=tolerance, seconds=seconds)
    return Solution(w[0] if squeeze else w, np.asarray([c.primal for c in certs]), certs, "lbfgs")


def solve_top_classifier(features, targets, l2: float = 1e-3, loss: str = "logistic", *, method: str = "auto",
                         tolerance: float = 1e-6) -> Solution:
    """Solve the top classifier: ``method`` ``"cvxpy"``, ``"lbfgs"`` or ``"auto"`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    x, y, _ = _check_problem(features, targets, l2)
    if method == "auto":
        method = "cvxpy" if x.shape[1] * x.shape[2] * y.shape[2] <= CVXPY_MAX_SIZE else "lbfgs"
    if method == "cvxpy":
        return solve_cvxpy(features, targets, l2, loss, tolerance=tolerance)
    return solve_lbfgs(features, targets, l2, loss, tolerance=tolerance)


def top_classifier(l2: float = 1e-3, loss: str = "logistic", method: str = "auto"):
    """A ``top_classifier(features, targets) -> weights`` for :func:`sim.layerwise.fit_layerwise`.

    The weights of ``squared_hinge`` are used as logits too (arg-max of :math:`z`).
    """
    _check_loss(loss)

    def fit(features, targets):
        return np.asarray(solve_top_classifier(features, targets, l2, loss, method=method).weights).reshape(
            np.shape(features)[0], np.shape(features)[-1], np.shape(targets)[-1])

    return fit


def sgd_top_classifier(features, targets, l2: float, loss: str = "logistic", *, runs: int = 4, steps: int = 2000,
                       lr: float = 0.5, batch_size: int = 32, seed: int = 0) -> np.ndarray:
    r"""Minibatch SGD on :math:`P` from zero, ``runs`` independent runs per member (different minibatch orders).

    The step size decays as :math:`\eta_t = \eta / (1 + t / 200)`. Returns the final
    weights ``(runs, E, F, K)``; their objectives are never below the optimum.
    """
    from sim.backend import member_rngs

    x, y, _ = _check_problem(features, targets, l2)
    e, n, f = x.shape
    k = y.shape[-1]
    w = np.zeros((runs, e, f, k))
    rngs = member_rngs(seed, runs, "batches")
    batch = min(int(batch_size), n)
    for step in range(int(steps)):
        idx = np.stack([rng.choice(n, batch, replace=False) for rng in rngs])  # (runs, B)
        xb = x[:, idx].transpose(1, 0, 2, 3)  # (runs, E, B, F)
        yb = y[:, idx].transpose(1, 0, 2, 3)
        _, grad = objective(w, xb, yb, l2, loss)
        w -= lr / (1 + step / 200) * grad
    return w
