r"""An augmented Lagrangian solver of the cone-constrained ReLU program, batched over an ensemble axis.

The program of every member :math:`e` (:mod:`theory.convex.relu`; Pilanci & Ergen 2020) is

.. math:: \min_{v_i, w_i} \tfrac12\Big\lVert \sum_i D_i X (v_i - w_i) - y\Big\rVert^2
          + \beta \sum_i \big(\lVert v_i\rVert + \lVert w_i\rVert\big)
   \quad\text{s.t.}\quad G_i v_i \ge 0,\ G_i w_i \ge 0,\qquad G_i = (2D_i - I)X.

Write the :math:`2P` blocks as the columns :math:`z_j` of :math:`Z = [V^T, W^T] \in \mathbb R^{d\times 2P}`
(block :math:`j` has the pattern :math:`D_j` and the sign :math:`s_j = \pm 1` of :math:`v` or :math:`w`), so
that :math:`XZ` holds every :math:`Xz_j` at once, the prediction is
:math:`\hat y = \mathrm{rowsum}(M_s \odot XZ)` with :math:`M_s = [M, -M]` and the constraints read
:math:`C(Z) = S \odot XZ \ge 0` with :math:`S = [2M - 1, 2M - 1]`.

**Augmented Lagrangian** (Hestenes 1969, Powell 1969; Rockafellar 1973 for inequalities; Mishkin
et al. 2022 use it for this program, with accelerated proximal gradient inside). With multipliers
:math:`\Lambda \ge 0` ``(n, 2P)`` and a penalty :math:`\rho > 0`,

.. math:: \mathcal L_\rho(Z, \Lambda) = \underbrace{\tfrac12\lVert \hat y(Z) - y\rVert^2
   + \tfrac1{2\rho}\big\lVert(\Lambda - \rho C(Z))_+\big\rVert^2}_{f(Z)} + \beta\sum_j\lVert z_j\rVert
   \;-\; \tfrac1{2\rho}\lVert\Lambda\rVert^2,

.. math:: \nabla f(Z) = X^T\big(M_s \odot (\hat y - y)1^T - S \odot (\Lambda - \rho C(Z))_+\big).

The inner loop is FISTA on :math:`\mathcal L_\rho(\cdot, \Lambda)` with the group-lasso prox
:math:`z_j \mapsto z_j\max(0, 1 - \beta/(L\lVert z_j\rVert))`, the gradient restart of O'Donoghue &
Candès (2015) and backtracking on :math:`L` (every step first tries :math:`0.9L`, then doubles
:math:`L` until :math:`f(Z^+) \le f(Y) + \langle\nabla f(Y), Z^+ - Y\rangle + \tfrac L2\lVert Z^+ - Y\rVert^2`;
Scheinberg, Goldfarb & Bai 2014): the local curvature of the penalty is :math:`\rho` times that of
the few violated rows, far below the global :math:`\rho\lVert X\rVert_2^2`. :math:`XZ` enters
affinely, so the extrapolated point's prediction and :math:`\Lambda - \rho C` are combinations of
the last two iterates' and each step costs two products with :math:`X` (one more per backtrack).
The outer loop is *inexact*: after ``inner_iterations`` steps the multipliers move to
:math:`\Lambda^+ = (\Lambda - \rho C(Z))_+` (the AL's dual ascent step), extrapolated as in
Nesterov's method,

.. math:: \Lambda \leftarrow \big(\Lambda^+_k + \tfrac{\tau_{k-1} - 1}{\tau_k}(\Lambda^+_k - \Lambda^+_{k-1})\big)_+

(an inexact accelerated AL; Kang, Yun & Woo 2015), restarted as in Goldstein et al. (2014) when the
multipliers' step :math:`\lVert\Lambda^+ - \Lambda\rVert` stops shrinking, and FISTA restarts from :math:`Z`.
It is a first-order method: its iteration count depends strongly on the instance (from about a
thousand to tens of thousands for a certified gap of 1e-6; slowest where the cones bind hard). Default
:math:`\rho = \tfrac14\lVert A\rVert_2^2/\max_k\lVert x_k\rVert^2` (the data term's curvature against a
quarter of one violated row's), :math:`\lVert A\rVert_2^2 = 2\lVert A_M\rVert_2^2`
(:func:`theory.convex.first_order.lipschitz`).

**Certificate without a cone projection.** :math:`\lambda = y - \hat y` and
:math:`\mu = (\Lambda - \rho C(Z))_+ \ge 0` form a dual point of the program (see
:mod:`theory.convex.relu`): block :math:`j`'s dual constraint is
:math:`\lVert X^T(s_j D_j\lambda) + G_j^T\mu_j\rVert \le \beta`, and the vector inside is
:math:`-\nabla_j f(Z)`. With :math:`\sigma = \max_j\lVert\nabla_j f(Z)\rVert`, the scaled point
:math:`t(\lambda, \mu)`, :math:`t = \min(1, \beta/\sigma)`, is dual feasible, so
:math:`D(t\lambda) = \tfrac12\lVert y\rVert^2 - \tfrac12\lVert t\lambda - y\rVert^2 \le p^*` (weak
duality, with no non-negative least squares).

Stopping: a member is done when its relative gap :math:`(F(Z) - D(t\lambda))/\max(1, |F(Z)|) \le`
``tol`` and its relative constraint violation
:math:`\max(0, -\min C(Z))/(\lVert X\rVert_2\max_j\lVert z_j\rVert) \le` ``feasibility_tol`` (or,
with ``target``, a known optimal value as in a benchmark, when :math:`|F(Z) - \text{target}|` is within
``tol`` relatively and the violation is). The point is feasible only to that tolerance, so
:math:`F(Z)` may lie below :math:`p^*` by about the violation times the multipliers; the bound
:math:`D(t\lambda) \le p^*` holds exactly. The bound is the slow part: :math:`\sigma/\beta - 1`
must be about ``tol`` for every block, which takes more iterations than the objective itself.

Every array operation goes through the namespace of the inputs (``array_api_compat``): numpy, CuPy,
array-api-strict. Members leave the batch when they are done, as in :func:`~theory.convex.first_order.fista_gated`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from array_api_compat import array_namespace

from .first_order import lipschitz


@dataclass
class AugmentedResult:
    """The AL solver's output; leading axis ``E`` (dropped for unbatched input).

    ``V``, ``W`` ``(E, P, d)``; ``objective``, ``lower_bound`` (certified), ``violation`` (relative)
    and ``rho`` ``(E,)``; ``multipliers`` ``(E, n, 2P)`` (:math:`\\mu` of the ``v`` blocks, then of the
    ``w`` blocks); ``iterations`` is the most inner iterations of any member, ``outer`` the most
    multiplier updates; ``status`` ``"converged"`` when every member met both tolerances.
    """

    V: object
    W: object
    objective: object
    lower_bound: object
    violation: object
    multipliers: object
    rho: object
    iterations: int
    outer: int
    status: str
    member_iterations: list = field(default_factory=list)
    member_outer: list = field(default_factory=list)


def _spectral_norm_sq(xp, X, iterations: int = 50):
    r""":math:`\lVert X\rVert_2^2` per member ``(E,)`` by power iteration on :math:`X^TX` ``(E, d, d)``."""
    gram = xp.matmul(xp.permute_dims(X, (0, 2, 1)), X)
    v = xp.ones((X.shape[0], X.shape[2], 1), dtype=X.dtype)
    value = xp.ones((X.shape[0],), dtype=X.dtype)
    for _ in range(iterations):
        v = xp.matmul(gram, v)
        value = xp.sqrt(xp.sum(v * v, axis=(1, 2)))
        v = v / xp.maximum(value, 1e-300)[:, None, None]
    return value


def _check_settings(beta, tol, feasibility_tol, rho, max_iter, inner_iterations, shrink):
    for name, value in (("tol", tol), ("feasibility_tol", feasibility_tol)):
        if not (0.0 < float(value) < 1.0):
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if not (0 < float(beta) < float("inf")):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if rho is not None and not (0 < float(rho) < float("inf")):
        raise ValueError(f"rho must be None (automatic) or a finite number > 0, got {rho!r}")
    if not (0 < float(shrink) <= 1):
        raise ValueError(f"shrink must be in (0, 1], got {shrink!r}")
    for name, value in (("max_iter", max_iter), ("inner_iterations", inner_iterations)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _measure(xp, Xt, y, beta, Ms, S, Z, pred, K, Lam, rho):
    """At ``Z`` (its prediction, ``K = Lam - rho C``): objective, certified bound, worst constraint value,
    the updated multipliers and the largest block norm."""
    lam = y - pred  # the residual, (E, n)
    mu = xp.maximum(K, 0.0)
    grad = xp.matmul(Xt, -Ms * lam[:, :, None] - S * mu)  # (E, d, 2P): minus the dual constraints' vectors
    norms = xp.sqrt(xp.sum(Z * Z, axis=1))  # (E, 2P)
    primal = 0.5 * xp.sum(lam * lam, axis=-1) + beta * xp.sum(norms, axis=-1)
    sigma = xp.max(xp.sqrt(xp.sum(grad * grad, axis=1)), axis=-1)
    scale = xp.where(sigma > beta, beta / xp.maximum(sigma, 1e-300), xp.ones_like(sigma))
    lam_t = lam * scale[:, None]
    bound = 0.5 * xp.sum(y * y, axis=-1) - 0.5 * xp.sum((lam_t - y) ** 2, axis=-1)
    C = (Lam - K) / rho[:, None, None]
    worst = -xp.min(xp.reshape(C, (C.shape[0], -1)), axis=-1)
    return primal, bound, worst, mu, xp.max(norms, axis=-1)


def _smooth_parts(xp, X, Ms, rhoS, Lam, Z):
    r"""``(pred, K)`` at ``Z``: the prediction and :math:`K = \Lambda - \rho C(Z)`."""
    H = xp.matmul(X, Z)
    return xp.sum(Ms * H, axis=-1), Lam - rhoS * H


def _smooth_value(xp, y, rho, pred, K):
    r = pred - y
    Kp = xp.maximum(K, 0.0)
    return 0.5 * xp.sum(r * r, axis=-1) + 0.5 * xp.sum(Kp * Kp, axis=(1, 2)) / rho, r, Kp


def _batch(xp, X, y, mask):
    """Inputs with a leading member axis, broadcast to one ``E``, checked."""
    if X.ndim not in (2, 3) or y.ndim != X.ndim - 1 or mask.ndim != X.ndim:
        raise ValueError(f"X must be (n, d) or (E, n, d), y (n,) or (E, n), mask (n, P) or (E, n, P) alike; got "
                         f"{X.shape}, {y.shape}, {mask.shape}")
    squeeze = X.ndim == 2
    if squeeze:
        X, y, mask = X[None, ...], y[None, ...], mask[None, ...]
    e = max(X.shape[0], y.shape[0], mask.shape[0])
    if any(a.shape[0] not in (1, e) for a in (X, y, mask)):
        raise ValueError(f"the member axes of X, y and mask must agree (or be 1), got {X.shape}, {y.shape}, "
                         f"{mask.shape}")
    if X.shape[1] != y.shape[1] or mask.shape[1] != X.shape[1]:
        raise ValueError(f"X, y and mask must share n, got {X.shape}, {y.shape}, {mask.shape}")
    X = xp.broadcast_to(X, (e, *X.shape[1:]))
    y = xp.broadcast_to(xp.astype(y, X.dtype), (e, y.shape[-1]))
    mask = xp.astype(xp.broadcast_to(mask, (e, *mask.shape[1:])), X.dtype)
    return X, y, mask, squeeze


def al_relu(X, y, beta: float, mask, *, tol: float = 1e-6, feasibility_tol: float | None = None,
            rho: float | None = None, inner_iterations: int = 20, max_iter: int = 50000, shrink: float = 0.9,
            accelerate: bool = True, multipliers=None, target: float | None = None) -> AugmentedResult:
    r"""The ReLU program (module docstring) by the augmented Lagrangian method, all members at once.

    Parameters
    ----------
    X : ``(n, d)`` or ``(E, n, d)``; y : ``(n,)`` or ``(E, n)``; mask : ``(n, P)`` or ``(E, n, P)`` (0/1).
    beta : the weight decay :math:`\beta > 0`.
    tol : stop when the certified relative gap is at most ``tol`` (and the violation is small).
    feasibility_tol : the relative constraint violation allowed at the end (default ``tol``).
    rho : the penalty; ``None`` takes :math:`\tfrac14\lVert A\rVert_2^2/\max_k\lVert x_k\rVert^2`.
    inner_iterations : FISTA steps between multiplier updates (and checks of the stopping rule).
    max_iter : the most FISTA steps in all.
    shrink : every step first tries :math:`L \cdot` ``shrink`` (backtracking).
    accelerate : extrapolate the multipliers (Nesterov); ``False``: the plain update.
    multipliers : a warm start :math:`\Lambda` ``(n, 2P)`` or ``(E, n, 2P)`` (default zero).
    target : a known optimal value (benchmarks): stop on the objective's distance to it instead of the
        certified gap.
    """
    xp = array_namespace(X, y, mask)
    feasibility_tol = tol if feasibility_tol is None else feasibility_tol
    _check_settings(beta, tol, feasibility_tol, rho, max_iter, inner_iterations, shrink)
    beta = float(beta)
    X, y, mask, squeeze = _batch(xp, X, y, mask)
    e, n, d = X.shape
    p = mask.shape[2]
    Xt = xp.permute_dims(X, (0, 2, 1))
    Ms = xp.concat([mask, -mask], axis=-1)  # (E, n, 2P): the prediction's signed patterns
    S = xp.concat([2.0 * mask - 1.0, 2.0 * mask - 1.0], axis=-1)  # (E, n, 2P): the cone signs
    a_sq = 2.0 * lipschitz(X, mask)
    x_norm = xp.sqrt(_spectral_norm_sq(xp, X))
    row_sq = xp.max(xp.sum(X * X, axis=-1), axis=-1)
    rho_e = 0.25 * a_sq / row_sq if rho is None else xp.full((e,), float(rho), dtype=X.dtype)
    L = a_sq  # the backtracking's Lipschitz estimate, per member
    Z = xp.zeros((e, d, 2 * p), dtype=X.dtype)
    if multipliers is None:
        Lam = xp.zeros((e, n, 2 * p), dtype=X.dtype)
    else:
        Lam = xp.broadcast_to(xp.asarray(multipliers, dtype=X.dtype), (e, n, 2 * p))
        if bool(xp.any(Lam < 0)):
            raise ValueError("multipliers must be >= 0 (they are the multipliers of inequality constraints)")
    rhoS = rho_e[:, None, None] * S
    predZ, KZ = _smooth_parts(xp, X, Ms, rhoS, Lam, Z)
    Y, predY, KY = Z, predZ, KZ
    t = xp.ones((e,), dtype=X.dtype)
    Lam_plus, tau = Lam, xp.ones((e,), dtype=X.dtype)  # the last un-extrapolated multipliers, Nesterov's tau
    last_step = xp.full((e,), float("inf"), dtype=X.dtype)
    slack = 64 * float(xp.finfo(X.dtype).eps)
    target_scale = None if target is None else tol * max(1.0, abs(float(target)))

    out = {"Z": xp.zeros((e, d, 2 * p), dtype=X.dtype), "Lam": xp.zeros((e, n, 2 * p), dtype=X.dtype),
           "primal": xp.zeros((e,), dtype=X.dtype), "bound": xp.zeros((e,), dtype=X.dtype),
           "violation": xp.zeros((e,), dtype=X.dtype), "rho": xp.zeros((e,), dtype=X.dtype)}
    active = list(range(e))  # members still iterating; done ones leave the batch (no wasted work)
    iterations, outers, converged = [int(max_iter)] * e, [0] * e, [False] * e
    outer = 0
    for it in range(1, int(max_iter) + 1):
        fY, rY, TY = _smooth_value(xp, y, rho_e, predY, KY)
        grad = xp.matmul(Xt, Ms * rY[:, :, None] - S * TY)
        L_try = L * shrink
        for _ in range(64):  # backtracking: double L where the quadratic upper bound fails
            step = 1.0 / L_try
            G = Y - step[:, None, None] * grad
            norms = xp.sqrt(xp.sum(G * G, axis=1))
            Zn = G * xp.maximum(1.0 - beta * step[:, None] / xp.maximum(norms, 1e-300), 0.0)[:, None, :]
            predN, KN = _smooth_parts(xp, X, Ms, rhoS, Lam, Zn)
            fN = _smooth_value(xp, y, rho_e, predN, KN)[0]
            D = Zn - Y
            model = fY + xp.sum(grad * D, axis=(1, 2)) + 0.5 * L_try * xp.sum(D * D, axis=(1, 2))
            bad = fN > model + slack * xp.abs(fY)
            if not bool(xp.any(bad)):
                break
            L_try = xp.where(bad, 2.0 * L_try, L_try)
        restart = xp.sum((Y - Zn) * (Zn - Z), axis=(1, 2)) > 0  # gradient restart (O'Donoghue-Candes)
        t_new = (1.0 + xp.sqrt(1.0 + 4.0 * t * t * L_try / L)) / 2.0
        momentum = xp.where(restart, xp.zeros_like(t), (t - 1.0) / t_new)
        t, L = xp.where(restart, xp.ones_like(t), t_new), L_try
        Y = Zn + momentum[:, None, None] * (Zn - Z)
        KY = KN + momentum[:, None, None] * (KN - KZ)  # X Y is affine in the iterates: no product needed
        predY = predN + momentum[:, None] * (predN - predZ)
        Z, KZ, predZ = Zn, KN, predN
        if it % int(inner_iterations) and it != int(max_iter):
            continue
        outer += 1
        primal, bound, worst, mu, biggest = _measure(xp, Xt, y, beta, Ms, S, Z, predZ, KZ, Lam, rho_e)
        violation = xp.maximum(worst, 0.0) / (x_norm * xp.maximum(biggest, 1e-300))
        if target is None:
            gap = (primal - bound) / xp.maximum(xp.abs(primal), xp.ones_like(primal))
            done = (gap <= tol) & (violation <= feasibility_tol)
        else:
            done = (xp.abs(primal - float(target)) <= target_scale) & (violation <= feasibility_tol)
        flags = [bool(done[j]) or it == int(max_iter) for j in range(len(active))]
        for j, member in enumerate(active):
            if flags[j]:
                out["Z"][member, ...] = Z[j, ...]
                out["Lam"][member, ...] = mu[j, ...]
                for key, value in (("primal", primal), ("bound", bound), ("violation", violation), ("rho", rho_e)):
                    out[key][member] = value[j]
                converged[member] = bool(done[j])
                iterations[member], outers[member] = it, outer
        if all(flags):
            break
        # the outer step: multipliers (extrapolated), then FISTA restarts from Z
        if accelerate:  # with the adaptive restart of Goldstein et al. (2014) on the dual step's length
            dual_step = xp.sum((mu - Lam) ** 2, axis=(1, 2))
            restart = dual_step > 0.999 * last_step
            tau = xp.where(restart, xp.ones_like(tau), tau)
            last_step = xp.where(restart, last_step / 0.999, dual_step)
            tau_new = (1.0 + xp.sqrt(1.0 + 4.0 * tau * tau)) / 2.0
            Lam = xp.maximum(mu + ((tau - 1.0) / tau_new)[:, None, None] * (mu - Lam_plus), 0.0)
            tau = tau_new
        else:
            Lam = mu
        Lam_plus = mu
        predZ, KZ = _smooth_parts(xp, X, Ms, rhoS, Lam, Z)
        Y, KY, predY, t = Z, KZ, predZ, xp.ones_like(t)
        if any(flags):
            keep = xp.asarray([j for j, f in enumerate(flags) if not f])
            (X, Xt, y, Ms, S, rhoS, a_sq, x_norm, rho_e, L, Z, KZ, predZ, Y, KY, predY, t, Lam, Lam_plus, tau,
             last_step) = (xp.take(a, keep, axis=0) for a in (X, Xt, y, Ms, S, rhoS, a_sq, x_norm, rho_e, L, Z, KZ,
                                                              predZ, Y, KY, predY, t, Lam, Lam_plus, tau, last_step))
            active = [m for m, f in zip(active, flags) if not f]
    Zo = out["Z"]
    V, W = xp.permute_dims(Zo[:, :, :p], (0, 2, 1)), xp.permute_dims(Zo[:, :, p:], (0, 2, 1))
    fields = [V, W, out["primal"], out["bound"], out["violation"], out["Lam"], out["rho"]]
    if squeeze:
        fields = [f[0, ...] for f in fields]
    status = "converged" if all(converged) else "max_iter"
    return AugmentedResult(*fields, max(iterations), max(outers), status, iterations, outers)
