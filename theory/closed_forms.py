r"""Closed forms of linear-network learning dynamics (pure functions, host numpy).

Time is the gradient-flow time of DESIGN.md: gradient descent with step
:math:`\eta` for :math:`k` steps is the flow at :math:`t = \eta k` (:math:`\tau = 1`).

The setting of Saxe et al. (2013) and of our FA analogue is a two-layer linear
network :math:`\hat y = W_2 W_1 x` trained on the loss
:math:`L = \frac{1}{2N}\sum_n \lVert W_2 W_1 x_n - y_n\rVert^2` with whitened
inputs (:math:`\Sigma_{xx} = X^T X/N = I`), so only the input-output
correlation :math:`\Sigma_{yx} = Y^T X / N = U S V^T` matters. In the repository's
conventions a rule's update is :math:`\Delta W_l = \operatorname{mean}_n
\delta_{l,n} h_{l-1,n}^T` and gradient flow is :math:`\dot W_l = -\Delta W_l`;
with :math:`\delta_2 = e = W_2 W_1 x - y` this gives

.. math::
    \dot W_2 = (\Sigma_{yx} - W_2 W_1 \Sigma_{xx}) W_1^T, \qquad
    \dot W_1 = G\,(\Sigma_{yx} - W_2 W_1 \Sigma_{xx}),

with :math:`G = W_2^T` for BP and :math:`G = B` (the fixed FA feedback of shape
``(n_1, n_2)``) for FA.

Modes. Write :math:`W_1 = R\,\mathrm{diag}(a)\,V^T`,
:math:`W_2 = U\,\mathrm{diag}(c)\,R^T` and, for FA,
:math:`B = R\,\mathrm{diag}(b)\,U^T` with :math:`R` ``(n_1, r)`` orthonormal. The
flow keeps this form (orthogonal invariance, see :func:`derive_fa_mode_dynamics`),
mode :math:`i` has strength :math:`u_i = a_i c_i` (the i-th singular value of
:math:`W_2 W_1` in the teacher's frame), and

* BP: :math:`\dot a = c(s - ac),\ \dot c = a(s - ac)`; from a balanced start
  (:math:`a = c`) :math:`\dot u = 2u(s - u)`, the logistic of
  :func:`saxe_mode_strength`; from zero nothing moves.
* FA (ours): :math:`\dot a = b(s - ac),\ \dot c = a(s - ac)`; the quantity
  :math:`a^2 - 2bc` is conserved, so from zero :math:`c = a^2/(2b)`,
  :math:`u = a^3/(2b)` and :math:`\dot a = bs - a^3/2` (:func:`fa_mode_strength`).

The scalar FA chain of Baldi et al. (2018), :math:`x \to a_1 x \to a_2 a_1 x`
with feedback :math:`c`, is the same system with one mode and a general start
(:func:`scalar_chain_limit`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.lazy import lazy_callable

solve_ivp = lazy_callable("scipy.integrate", "solve_ivp")  # imported at the first call (sim.lazy)

__all__ = [
    "saxe_mode_strength",
    "saxe_half_time",
    "depth_mode_rate",
    "depth_mode_strength",
    "fa_mode_rate",
    "fa_mode_time",
    "fa_mode_strength",
    "fa_mode_weights",
    "fa_mode_half_time",
    "fa_mode_early",
    "scalar_chain_invariant",
    "scalar_chain_equilibria",
    "scalar_chain_limit",
    "scalar_chain_bistable",
    "FAModeDerivation",
    "derive_fa_mode_dynamics",
]


# --- Saxe et al. (2013): BP modes ------------------------------------------------------------------

def saxe_mode_strength(t, s, u0):
    r"""Mode strength of a two-layer linear network under BP from a small balanced start.

    The solution of :math:`\dot u = 2u(s - u)`, :math:`u(0) = u_0` (Saxe et al. 2013):

    .. math:: u(t) = \frac{s\, e^{2st}}{e^{2st} - 1 + s/u_0}
                   = \frac{s}{1 + (s/u_0 - 1)\, e^{-2st}} .

    Parameters
    ----------
    t : array_like
        Gradient-flow time :math:`t = \eta k` (non-negative).
    s : array_like
        Singular value of the teacher's mode (positive).
    u0 : array_like
        Initial strength of the mode (:math:`a_0 c_0` with :math:`a_0 = c_0`), non-negative;
        ``u0 = 0`` stays at zero for ever.

    Returns
    -------
    ndarray
        :math:`u(t)`, broadcast over the inputs.
    """
    t, s, u0 = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, s, u0)))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        out = s / (1.0 + (s / u0 - 1.0) * np.exp(-2.0 * s * t))
    return np.where(u0 == 0, 0.0, out)


def saxe_half_time(s, u0):
    r"""Time at which a BP mode reaches half its final strength, :math:`u = s/2`.

    .. math:: t_{1/2} = \frac{\ln(s/u_0 - 1)}{2s}

    (from :func:`saxe_mode_strength`; needs :math:`u_0 < s/2`). It decreases with
    :math:`s` whenever :math:`s > e\,u_0`, roughly: larger singular values are learnt first.
    """
    s, u0 = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(u0, dtype=float))
    if np.any(u0 <= 0) or np.any(u0 >= s / 2):
        raise ValueError("the half-time needs 0 < u0 < s/2")
    return np.log(s / u0 - 1.0) / (2.0 * s)


def depth_mode_rate(u, s, depth: int):
    r"""Right-hand side of the balanced depth-:math:`D` mode ODE (Saxe et al. 2013).

    With :math:`D` layers each of strength :math:`u^{1/D}` along a mode,

    .. math:: \dot u = D\, u^{2 - 2/D}\, (s - u) .

    ``depth = 2`` gives the logistic :math:`2u(s-u)`, ``depth = 1`` the linear
    regression :math:`s - u`.
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    u = np.asarray(u, dtype=float)
    return depth * np.abs(u) ** (2.0 - 2.0 / depth) * (s - u)


def depth_mode_strength(t, s: float, u0: float, depth: int, *, rtol: float = 1e-11, atol: float = 1e-14):
    r"""Strength :math:`u(t)` of a balanced depth-:math:`D` mode, integrating :func:`depth_mode_rate`.

    Solved with ``scipy.integrate.solve_ivp`` (DOP853, tolerances ``rtol``/``atol``)
    at the requested times.

    Parameters
    ----------
    t : array_like
        Non-negative times, any order.
    s, u0 : float
        Singular value and initial strength (both positive).
    depth : int
        Number of layers :math:`D \ge 1`.
    """
    t = np.asarray(t, dtype=float)
    if np.any(t < 0):
        raise ValueError("times must be non-negative")
    flat = t.ravel()
    if flat.size == 0:
        return t.copy()
    order = np.argsort(flat)
    times = flat[order]
    sol = solve_ivp(lambda _, u: depth_mode_rate(u, s, depth), (0.0, float(times[-1])), [float(u0)],
                    method="DOP853", t_eval=times, rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - smooth scalar ODE
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    out = np.empty_like(flat)
    out[order] = sol.y[0]
    return out.reshape(t.shape)


# --- FA analogue of the Saxe modes (ours) ----------------------------------------------------------

def fa_mode_rate(a, s, b):
    r"""Right-hand side of the reduced FA mode ODE from zero, :math:`\dot a = bs - a^3/2`.

    Here :math:`a` is the mode's first-layer strength, :math:`b` the feedback's
    strength along the mode and :math:`s` the singular value; the second-layer
    strength is :math:`c = a^2/(2b)` and the mode strength :math:`u = a^3/(2b)`.
    """
    a = np.asarray(a, dtype=float)
    return b * s - a ** 3 / 2


def _fa_primitive(v):
    r""":math:`F(v) = \int_0^v dw/(1 - w^3)` on :math:`[0, 1)`, increasing from 0 to infinity."""
    v = np.asarray(v, dtype=float)
    with np.errstate(divide="ignore"):
        return (np.log((v * v + v + 1) / (1 - v) ** 2) / 6
                + (np.arctan((2 * v + 1) / math.sqrt(3)) - math.pi / 6) / math.sqrt(3))


def _fa_scale(s, b):
    """The fixed point ``k = (2bs)^(1/3)`` of the first-layer strength (real cube root)."""
    return np.cbrt(2.0 * np.asarray(b, dtype=float) * np.asarray(s, dtype=float))


def fa_mode_time(u, s, b):
    r"""Time an FA mode needs, from zero, to reach strength ``u`` (closed form; ours).

    With :math:`k = (2bs)^{1/3}` and :math:`v = (u/s)^{1/3} \in [0, 1)`,
    integrating :math:`dt = da/(bs - a^3/2)` with :math:`a = kv` gives

    .. math::
        t(u) = \frac{2}{k^2} F(v), \qquad
        F(v) = \int_0^v \frac{dw}{1 - w^3}
             = \frac16 \ln\frac{v^2 + v + 1}{(1 - v)^2}
               + \frac{1}{\sqrt3}\Big(\arctan\frac{2v + 1}{\sqrt3} - \frac{\pi}{6}\Big).

    Parameters
    ----------
    u : array_like
        Target strength, :math:`0 \le u < s`.
    s : array_like
        Singular value (positive).
    b : array_like
        Feedback strength along the mode (non-zero; its sign does not matter).
    """
    u, s, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (u, s, b)))
    if np.any(u < 0) or np.any(u >= s):
        raise ValueError("the FA mode strength from zero stays in [0, s)")
    k = _fa_scale(s, b)
    return 2.0 / (k * k) * _fa_primitive(np.cbrt(u / s))


def _invert_primitive(tau):
    r"""Solve :math:`F(v) = \tau` for :math:`v \in [0, 1)`, element-wise (bisection, then Newton)."""
    tau = np.asarray(tau, dtype=float)
    lo, hi = np.zeros_like(tau), np.ones_like(tau)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = _fa_primitive(mid) < tau
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    v = 0.5 * (lo + hi)
    top = np.nextafter(1.0, 0.0)
    for _ in range(2):  # Newton, F'(v) = 1/(1 - v^3); beyond float resolution near v = 1 keep the bisection
        with np.errstate(invalid="ignore", over="ignore"):
            step = (_fa_primitive(v) - tau) * (1 - v ** 3)
        v = np.clip(v - np.where(np.isfinite(step), step, 0.0), 0.0, top)
    return np.minimum(v, top)


def fa_mode_strength(t, s, b):
    r"""Strength :math:`u(t)` of an FA mode from zero init, feedback aligned with the output modes (ours).

    The inverse of :func:`fa_mode_time`: :math:`u(t) = s\, v^3` with
    :math:`F(v) = k^2 t / 2` and :math:`k = (2bs)^{1/3}`. There is no plateau:
    early on :math:`u \approx b^2 s^3 t^3 / 2` (:func:`fa_mode_early`), and
    :math:`u \to s` as :math:`t \to \infty` for any :math:`b \ne 0`.
    BP from the same zero start does not move at all.
    """
    t, s, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, s, b)))
    if np.any(t < 0):
        raise ValueError("times must be non-negative")
    k = _fa_scale(s, b)
    return s * _invert_primitive(k * k * t / 2) ** 3


def fa_mode_weights(t, s, b):
    r"""The per-mode weights :math:`(a(t), c(t))` of FA from zero: :math:`a = kv`, :math:`c = a^2/(2b)`."""
    t, s, b = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (t, s, b)))
    k = _fa_scale(s, b)
    a = k * _invert_primitive(k * k * t / 2)
    return a, a * a / (2 * b)


def fa_mode_half_time(s, b):
    r"""Time an FA mode from zero needs to reach :math:`u = s/2`:
    :math:`t_{1/2} = 2 F(2^{-1/3}) / (2|b|s)^{2/3}`, so it scales as :math:`(|b|s)^{-2/3}`."""
    s, b = np.broadcast_arrays(np.asarray(s, dtype=float), np.asarray(b, dtype=float))
    k = _fa_scale(s, b)
    return 2.0 / (k * k) * _fa_primitive(2.0 ** (-1.0 / 3.0))


def fa_mode_early(t, s, b):
    r"""Leading term of the FA mode strength from zero: :math:`u(t) = \tfrac12 b^2 s^3 t^3 + O(t^6)`.

    From :math:`a = bst - (bs)^3 t^4/8 + O(t^7)` (series solution of
    :math:`\dot a = bs - a^3/2`), :math:`u = a^3/(2b) = \tfrac12 b^2 s^3 t^3
    - \tfrac{3}{16} b^4 s^5 t^6 + O(t^9)` (see :func:`derive_fa_mode_dynamics`).
    """
    t, s, b = (np.asarray(v, dtype=float) for v in (t, s, b))
    return 0.5 * b * b * s ** 3 * t ** 3


# --- the scalar FA chain (Baldi et al. 2018) -------------------------------------------------------

def scalar_chain_invariant(a1, a2, c):
    r"""The conserved quantity of the scalar FA chain, :math:`\kappa = a_1^2 - 2 c a_2`.

    For :math:`y \approx a_2 a_1 x` with feedback :math:`c`, :math:`\alpha = E[xy]`,
    :math:`\beta = E[x^2]`, the FA flow is :math:`\dot a_1 = c(\alpha - \beta a_1 a_2)`,
    :math:`\dot a_2 = a_1(\alpha - \beta a_1 a_2)` and :math:`\dot\kappa = 0`.
    """
    return np.asarray(a1, dtype=float) ** 2 - 2 * np.asarray(c, dtype=float) * np.asarray(a2, dtype=float)


def scalar_chain_equilibria(kappa: float, c: float, alpha: float, beta: float) -> np.ndarray:
    r"""The equilibria :math:`a_1^*` of the scalar FA chain on the level set :math:`\kappa`, ascending.

    On :math:`a_2 = (a_1^2 - \kappa)/(2c)` the flow reduces to
    :math:`\dot a_1 = g(a_1) = c\alpha - \tfrac{\beta}{2}(a_1^3 - \kappa a_1)`, whose real
    roots solve :math:`a_1^3 - \kappa a_1 = 2c\alpha/\beta`; every root has
    :math:`a_1 a_2 = \alpha/\beta`. There are three (two stable, one unstable
    between them) exactly when :math:`\kappa > 3\,(|c\alpha|/\beta)^{2/3}`, else one.
    """
    if c == 0 or beta <= 0:
        raise ValueError("the scalar chain needs c != 0 and beta > 0")
    roots = np.roots([1.0, 0.0, -float(kappa), -2.0 * c * alpha / beta])
    scale = max(1.0, float(np.max(np.abs(roots))))
    real = np.sort(roots[np.abs(roots.imag) <= 1e-9 * scale].real)
    return real


def scalar_chain_bistable(a1, a2, c, alpha, beta):
    r"""Whether the level set of :math:`(a_1, a_2)` holds two stable equilibria:
    :math:`\kappa = a_1^2 - 2ca_2 > 3(|c\alpha|/\beta)^{2/3}`."""
    kappa = scalar_chain_invariant(a1, a2, c)
    return kappa > 3.0 * (np.abs(np.asarray(c) * np.asarray(alpha)) / np.asarray(beta)) ** (2.0 / 3.0)


def scalar_chain_limit(a1, a2, c, alpha, beta):
    r"""Where the scalar FA chain's gradient flow converges from :math:`(a_1, a_2)` (Baldi et al. 2018; ours).

    The flow conserves :math:`\kappa = a_1^2 - 2ca_2` (:func:`scalar_chain_invariant`)
    and reduces to the one-dimensional :math:`\dot a_1 = g(a_1)` with
    :math:`g(a_1) = c\alpha - \tfrac\beta2 (a_1^3 - \kappa a_1)`, which goes to
    :math:`\mp\infty` as :math:`a_1 \to \pm\infty`. So :math:`a_1` moves monotonically
    to the nearest root of :math:`g` in the direction of :math:`g(a_1(0))`, and every
    root has :math:`a_1 a_2 = \alpha/\beta`: the product always converges to the
    regression optimum. When the level set is bistable
    (:func:`scalar_chain_bistable`) the lower stable root with :math:`c\alpha > 0`
    (upper with :math:`c\alpha < 0`) has :math:`a_1^2 < \kappa`, i.e.
    :math:`c\, a_2 < 0`: the chain ends *anti-aligned*, its forward weight of
    opposite sign to the feedback.

    Parameters
    ----------
    a1, a2, c : array_like
        Initial weights and feedback (``c != 0``), broadcast together.
    alpha, beta : float
        :math:`E[xy]` and :math:`E[x^2] > 0`.

    Returns
    -------
    (ndarray, ndarray)
        The limits :math:`a_1^*` and :math:`a_2^* = (a_1^{*2} - \kappa)/(2c)`.
    """
    a1, a2, c = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (a1, a2, c)))
    out1 = np.empty(a1.shape)
    for idx in np.ndindex(a1.shape):
        x1, cc = a1[idx], c[idx]
        kappa = x1 * x1 - 2 * cc * a2[idx]
        roots = scalar_chain_equilibria(kappa, cc, alpha, beta)
        g = cc * alpha - beta / 2 * (x1 ** 3 - kappa * x1)
        if g > 0:
            above = roots[roots >= x1]
            out1[idx] = above[0] if above.size else roots[-1]
        elif g < 0:
            below = roots[roots <= x1]
            out1[idx] = below[-1] if below.size else roots[0]
        else:
            out1[idx] = x1
    kappa = a1 * a1 - 2 * c * a2
    return out1, (out1 * out1 - kappa) / (2 * c)


# --- symbolic derivation of the FA modes -----------------------------------------------------------

@dataclass(frozen=True)
class FAModeDerivation:
    """The sympy derivation of the FA mode dynamics (see :func:`derive_fa_mode_dynamics`).

    Attributes
    ----------
    symbols : dict
        ``a``, ``c``, ``b``, ``s``, ``t``, ``u``, ``v`` (sympy symbols).
    mode_field : tuple
        :math:`(\\dot a, \\dot c)` read off the rotated 2x2 matrix flow (mode 1).
    off_diagonal : list
        The off-diagonal entries of the rotated matrix flow (all simplify to 0).
    bp_mode_field : tuple
        BP's :math:`(\\dot a, \\dot c)` (vanishes at :math:`a = c = 0`).
    invariant : sympy.Expr
        The quadratic conserved quantity found by the ansatz (:math:`a^2 - 2bc`).
    invariant_rate : sympy.Expr
        Its time derivative along the flow (simplifies to 0).
    reduced_rate : sympy.Expr
        :math:`\\dot a` on the level set of zero init (:math:`bs - a^3/2`).
    strength : sympy.Expr
        :math:`u = ac` on that level set (:math:`a^3/(2b)`).
    series_a, series_u : sympy.Expr
        Power series of :math:`a(t)` (to :math:`t^7`) and :math:`u(t)` (to :math:`t^9`) from zero.
    time_to_strength : sympy.Expr
        The closed-form :math:`t(a) = (2/k^2) F(a/k)`, :math:`k^3 = 2bs`.
    time_check : sympy.Expr
        :math:`dt/da - 1/\\dot a` (simplifies to 0).
    """

    symbols: dict
    mode_field: tuple
    off_diagonal: list
    bp_mode_field: tuple
    invariant: object
    invariant_rate: object
    reduced_rate: object
    strength: object
    series_a: object
    series_u: object
    time_to_strength: object
    time_check: object


def derive_fa_mode_dynamics() -> FAModeDerivation:
    r"""Derive the FA analogue of the Saxe modes with sympy (ours).

    Steps, all symbolic:

    1. Two-mode network in rotated frames: :math:`W_1 = R A V^T`,
       :math:`W_2 = U C R^T`, :math:`B = R D U^T`, :math:`\Sigma_{yx} = U S V^T`,
       :math:`\Sigma_{xx} = I`, with :math:`R, U, V` 2x2 rotations by symbolic angles
       and :math:`A, C, D, S` diagonal. The FA flow of the repository's conventions
       (:math:`\dot W_1 = B(\Sigma_{yx} - W_2W_1)`, :math:`\dot W_2 = (\Sigma_{yx} - W_2W_1)W_1^T`)
       is rotated back, :math:`R^T \dot W_1 V` and :math:`U^T \dot W_2 R`: the
       off-diagonal entries vanish and mode 1 reads :math:`\dot a = b(s - ac)`,
       :math:`\dot c = a(s - ac)`. The same with :math:`B = W_2^T` gives BP.
    2. A quadratic ansatz :math:`q = p_1 a^2 + p_2 bc + p_3 c^2 + p_4 ac` with
       :math:`\dot q \equiv 0` gives :math:`q \propto a^2 - 2bc`.
    3. From zero, :math:`a^2 = 2bc`: :math:`\dot a = bs - a^3/2` and :math:`u = a^3/(2b)`.
    4. Series solution from :math:`a(0) = 0` and the closed-form time :math:`t(a)`,
       checked by differentiation.
    """
    import sympy as sp

    t = sp.Symbol("t", nonnegative=True)
    a, c = sp.symbols("a c", real=True)
    b, s = sp.symbols("b s", positive=True)
    a2, c2, b2, s2 = sp.symbols("a_2 c_2 b_2 s_2", real=True)
    cosines = sp.symbols("cR cU cV", real=True)
    sines = sp.symbols("sR sU sV", real=True)
    # the rotations' only relation: cos^2 + sin^2 = 1 (a Groebner basis: leading terms are coprime)
    circle = [co ** 2 + si ** 2 - 1 for co, si in zip(cosines, sines)]
    r_, u_, v_ = (sp.Matrix([[co, -si], [si, co]]) for co, si in zip(cosines, sines))

    def on_circle(expr):  # reduce a polynomial modulo the relations cos^2 + sin^2 = 1
        return sp.factor(sp.reduced(sp.expand(expr), circle, *cosines, *sines, a, c, b, s, a2, c2, b2, s2)[1])

    amat, cmat, dmat, smat = (sp.diag(*p) for p in ((a, a2), (c, c2), (b, b2), (s, s2)))
    w1, w2 = r_ * amat * v_.T, u_ * cmat * r_.T
    feedback = r_ * dmat * u_.T
    sigma_yx = u_ * smat * v_.T
    residual = sigma_yx - w2 * w1
    fa_w1 = (r_.T * (feedback * residual) * v_).applyfunc(on_circle)
    fa_w2 = (u_.T * (residual * w1.T) * r_).applyfunc(on_circle)
    bp_w1 = (r_.T * (w2.T * residual) * v_).applyfunc(on_circle)
    off = [fa_w1[0, 1], fa_w1[1, 0], fa_w2[0, 1], fa_w2[1, 0], bp_w1[0, 1], bp_w1[1, 0]]
    a_dot, c_dot = sp.factor(fa_w1[0, 0]), sp.factor(fa_w2[0, 0])
    bp_fields = (sp.factor(bp_w1[0, 0]), sp.factor(fa_w2[0, 0]))

    p = sp.symbols("p1:5")
    q = p[0] * a ** 2 + p[1] * b * c + p[2] * c ** 2 + p[3] * a * c
    q_rate = sp.expand(sp.diff(q, a) * a_dot + sp.diff(q, c) * c_dot)
    coefficients = sp.Poly(q_rate, a, c).coeffs()
    solution = sp.solve(coefficients, p, dict=True)[0]
    invariant = sp.expand(q.subs(solution))
    invariant = invariant.subs({sym: 1 for sym in p if sym in invariant.free_symbols})  # the free scale
    invariant = sp.expand(invariant / invariant.coeff(a, 2))
    invariant_rate = sp.simplify(sp.diff(invariant, a) * a_dot + sp.diff(invariant, c) * c_dot)

    c_on_level = sp.solve(sp.Eq(invariant, 0), c)[0]
    reduced = sp.expand(a_dot.subs(c, c_on_level))
    strength = sp.simplify(a * c_on_level)

    order = 8
    coeff = sp.symbols(f"alpha1:{order}")
    series = sum(coeff[n - 1] * t ** n for n in range(1, order))
    equation = sp.expand(sp.diff(series, t) - reduced.subs(a, series))
    found = sp.solve([equation.coeff(t, n) for n in range(order - 1)], coeff, dict=True)[0]
    series_a = sp.expand(series.subs(found))
    series_u = sp.expand(sp.series(strength.subs(a, series_a), t, 0, 10).removeO())

    k = sp.cbrt(2 * b * s)
    vv = sp.Symbol("v", nonnegative=True)
    primitive = (sp.log((vv ** 2 + vv + 1) / (1 - vv) ** 2) / 6
                 + (sp.atan((2 * vv + 1) / sp.sqrt(3)) - sp.pi / 6) / sp.sqrt(3))
    time_to_strength = 2 / k ** 2 * primitive.subs(vv, a / k)
    time_check = sp.simplify(sp.diff(time_to_strength, a) - 1 / reduced)
    u_sym = sp.Symbol("u", nonnegative=True)
    return FAModeDerivation(
        symbols={"a": a, "c": c, "b": b, "s": s, "t": t, "u": u_sym, "v": vv},
        mode_field=(a_dot, c_dot), off_diagonal=off, bp_mode_field=bp_fields, invariant=invariant,
        invariant_rate=invariant_rate, reduced_rate=reduced, strength=strength, series_a=series_a,
        series_u=series_u, time_to_strength=time_to_strength, time_check=time_check)
