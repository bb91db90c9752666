r"""Symbolic gradient flows of small linear networks under BP, FA and DFA (sympy).

Setting (the repository's conventions, see DESIGN.md): a linear network
:math:`\hat y = W_L \cdots W_1 x`, the ``mse`` loss
:math:`\frac{1}{2N}\sum_b \lVert \hat y_b - y_b\rVert^2` and whitened inputs
:math:`X^T X / N = I`. Then

.. math:: L = \tfrac12 \lVert W_L \cdots W_1 - S \rVert_F^2 + \text{const},
          \qquad S = \Sigma_{yx} = Y^T X / N ,

and every rule's batch update has the *population form*

.. math:: \Delta W_l = D_l\, H_{l-1}^T, \qquad H_{l-1} = W_{l-1} \cdots W_1
          \;(H_0 = I),\qquad D_L = E = H_L - S ,

with the hidden teaching-signal matrices (``delta_{l,b} = D_l x_b``)

========  ===========================================
rule      :math:`D_l` for a hidden layer ``l``
========  ===========================================
BP        :math:`W_{l+1}^T D_{l+1}`
FA        :math:`B_{l+1} D_{l+1}`, ``B_{l+1}`` ``(n_l, n_{l+1})``
DFA       :math:`B_l E`, ``B_l`` ``(n_l, n_L)``
========  ===========================================

Gradient flow at time ``t = eta * steps`` is :math:`\dot W_l = -\Delta W_l`.
:func:`linear_flow` builds this vector field with sympy symbols for the
weights, the fixed feedback and the target ``S``; the other functions derive
its fixed points, Jacobian, eigenvalues and conserved quantities, and turn
them into numpy functions (:func:`numeric_field`, :func:`numeric_quantity`) to
compare with :func:`sim.rules.compute_updates` and with ``solve_ivp``
trajectories (:func:`integrate_flow`).

Conserved quantities (each time derivative simplifies to zero,
:func:`time_derivative`):

* BP, every hidden layer: :math:`W_l W_l^T - W_{l+1}^T W_{l+1}` (balancedness);
* FA, every hidden layer: :math:`W_l W_l^T - B_{l+1} W_{l+1} - W_{l+1}^T B_{l+1}^T`;
  for the scalar chain with feedback ``c`` this is :math:`a_1^2 - 2 c a_2`;
* DFA (ours), every hidden layer:
  :math:`W_l W_l^T - A_l W_{l+1} - W_{l+1}^T A_l^T` with
  :math:`A_l = B_l B_{l+1}^{+}` and :math:`B_L = I`. It needs
  :math:`A_l B_{l+1} = B_l`, true when ``B_{l+1}`` has full column rank
  (hidden widths at least ``n_L``), because then
  :math:`A_l \dot W_{l+1} = -B_l E H_l^T = \dot W_l W_l^T`. For two layers
  it is FA's law; for the scalar chain it is
  :math:`b_{l+1} a_l^2 - 2 b_l a_{l+1}` (``b_L = 1``).

Under gradient *descent* with step ``eta`` each of them changes per step by
exactly :math:`\eta^2` times a product of updates (for FA and DFA
:math:`\eta^2 \Delta W_l \Delta W_l^T`), so its drift at a fixed time
``t = eta k`` is O(eta).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from sim.lazy import lazy_module

sp = lazy_module("sympy")  # imported at the first use (sim.lazy)

RULE_NAMES = ("bp", "fa", "dfa")


@dataclass(frozen=True)
class LinearFlow:
    r"""Gradient flow of a linear network under one rule, as sympy matrices.

    Attributes
    ----------
    rule : {"bp", "fa", "dfa"}
        The learning rule.
    sizes : tuple of int
        ``(n_0, ..., n_L)``.
    weights : tuple of sympy.Matrix
        Symbolic ``W_1 .. W_L``, ``W_l`` of shape ``(n_l, n_{l-1})``.
    feedback : tuple of sympy.Matrix
        The fixed matrices in :func:`sim.rules.compute_updates` order: FA
        ``B_2 .. B_L`` (``(n_l, n_{l+1})``), DFA ``B_1 .. B_{L-1}``
        (``(n_l, n_L)``), BP none.
    target : sympy.Matrix
        :math:`S = \Sigma_{yx}`, ``(n_L, n_0)``.
    field : tuple of sympy.Matrix
        :math:`\dot W_l = -\Delta W_l` for each layer.
    """

    rule: str
    sizes: tuple
    weights: tuple
    feedback: tuple
    target: sp.Matrix
    field: tuple

    @property
    def state(self) -> tuple:
        """The weight entries, layer by layer, row-major: the flow's state variables."""
        return tuple(s for w in self.weights for s in w)

    @property
    def parameters(self) -> tuple:
        """The feedback entries (in feedback order, row-major), then the target's entries."""
        return tuple(s for b in self.feedback for s in b) + tuple(self.target)

    @property
    def vector(self) -> sp.Matrix:
        """The vector field as a column, in the order of :attr:`state`."""
        return sp.Matrix([f for m in self.field for f in m])

    def end_to_end(self) -> sp.Matrix:
        r"""The end-to-end map :math:`H_L = W_L \cdots W_1`."""
        return _products(self.weights)[-1]

    def error(self) -> sp.Matrix:
        r"""The error matrix :math:`E = W_L \cdots W_1 - S`."""
        return self.end_to_end() - self.target

    def loss(self) -> sp.Expr:
        r"""The loss :math:`\frac12 \lVert E \rVert_F^2` (up to the constant of the data)."""
        e = self.error()
        return sp.Rational(1, 2) * sum(v ** 2 for v in e)


def _matrix(name: str, rows: int, cols: int, scalar_name: str | None = None, **assumptions) -> sp.Matrix:
    if rows == 1 and cols == 1 and scalar_name is not None:
        return sp.ImmutableMatrix([[sp.Symbol(scalar_name, **assumptions)]])
    return sp.ImmutableMatrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i + 1}{j + 1}", **assumptions))


def _products(weights) -> list:
    """``[H_1, ..., H_L]`` with ``H_l = W_l ... W_1``."""
    out = [sp.Matrix(weights[0])]
    for w in weights[1:]:
        out.append(sp.Matrix(w) * out[-1])
    return out


def teaching_matrices(rule: str, weights, feedback, target) -> list:
    r"""The signal matrices :math:`D_1 .. D_L` of ``rule`` (see the module docstring).

    Parameters
    ----------
    rule : {"bp", "fa", "dfa"}
    weights, feedback : sequences of sympy matrices
        As in :class:`LinearFlow`.
    target : sympy.Matrix
        :math:`S`.

    Returns
    -------
    list of sympy.Matrix
        ``D_l`` of shape ``(n_l, n_0)``; the update is :math:`\Delta W_l = D_l H_{l-1}^T`.
    """
    if rule not in RULE_NAMES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULE_NAMES)}")
    n_layers = len(weights)
    error = _products(weights)[-1] - target
    signals = [None] * n_layers
    signals[-1] = error
    for i in range(n_layers - 2, -1, -1):
        if rule == "bp":
            signals[i] = sp.Matrix(weights[i + 1]).T * signals[i + 1]
        elif rule == "fa":
            signals[i] = sp.Matrix(feedback[i]) * signals[i + 1]
        else:
            signals[i] = sp.Matrix(feedback[i]) * error
    return signals


def linear_flow(rule: str, sizes: Sequence[int]) -> LinearFlow:
    r"""Build the symbolic gradient flow of a linear network under ``rule``.

    Parameters
    ----------
    rule : {"bp", "fa", "dfa"}
        The learning rule.
    sizes : sequence of int
        ``(n_0, ..., n_L)``, at least two entries. The scalar chain
        (all sizes 1) gets the papers' names: weights ``a1 .. aL``, target
        ``s``, FA feedback ``c`` (two layers) or ``c2 .. cL``, DFA feedback
        ``b1 .. b_{L-1}``. Otherwise entries are named ``w1_11``, ``b2_11``,
        ``s_11`` and so on.

    Returns
    -------
    LinearFlow
        With :math:`\dot W_l = -D_l H_{l-1}^T`, the population form of
        :func:`sim.rules.compute_updates` under whitened inputs.

    Examples
    --------
    >>> flow = linear_flow("fa", (1, 1, 1))
    >>> flow.vector.T
    Matrix([[-a1*a2*c + c*s, -a1**2*a2 + a1*s]])
    """
    if rule not in RULE_NAMES:
        raise ValueError(f"unknown rule {rule!r}; allowed: {', '.join(RULE_NAMES)}")
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
    return _linear_flow(rule, sizes)


@functools.lru_cache(maxsize=128)
def _linear_flow(rule: str, sizes: tuple) -> LinearFlow:
    n_layers = len(sizes) - 1
    scalar = all(n == 1 for n in sizes)
    weights = tuple(_matrix(f"w{l + 1}", sizes[l + 1], sizes[l], f"a{l + 1}" if scalar else None, real=True)
                    for l in range(n_layers))
    if rule == "fa":
        feedback = tuple(_matrix(f"b{l + 2}", sizes[l + 1], sizes[l + 2],
                                 ("c" if n_layers == 2 else f"c{l + 2}") if scalar else None, real=True)
                         for l in range(n_layers - 1))
    elif rule == "dfa":
        feedback = tuple(_matrix(f"b{l + 1}", sizes[l + 1], sizes[-1], f"b{l + 1}" if scalar else None, real=True)
                         for l in range(n_layers - 1))
    else:
        feedback = ()
    target = _matrix("s", sizes[-1], sizes[0], "s" if scalar else None, real=True)
    signals = teaching_matrices(rule, weights, feedback, target)
    products = [sp.eye(sizes[0])] + _products(weights)[:-1]
    field = tuple(sp.ImmutableMatrix((-d * h.T).applyfunc(sp.expand)) for d, h in zip(signals, products))
    return LinearFlow(rule, sizes, weights, feedback, target, field)


def negated(flow: LinearFlow) -> LinearFlow:
    """The same flow run backwards (gradient *ascent* for BP); a deliberately wrong field for tests."""
    return replace(flow, field=tuple(sp.ImmutableMatrix(-f) for f in flow.field))


# --- derivations ---------------------------------------------------------------------------------

def time_derivative(expr, flow: LinearFlow):
    r"""The derivative of ``expr`` along the flow, :math:`\sum_j \partial_{w_j} \mathrm{expr}\; \dot w_j`.

    Parameters
    ----------
    expr : sympy expression or matrix
        A function of the weights (and of the constant feedback and target).
    flow : LinearFlow

    Returns
    -------
    sympy expression or matrix, expanded (and simplified for rational entries).
    """
    rates = dict(zip(flow.state, flow.vector))

    def along(e):
        d = sp.expand(sum((sp.diff(e, w) * rate for w, rate in rates.items()), sp.Integer(0)))
        if any(p.exp.is_negative for p in d.atoms(sp.Pow)):  # rational entries (DFA's A_l)
            d = sp.cancel(sp.together(d))
        return d

    if isinstance(expr, sp.MatrixBase):
        return sp.Matrix(expr).applyfunc(along)
    return along(sp.sympify(expr))


def _pinv_full_column_rank(b: sp.Matrix) -> sp.Matrix:
    r""":math:`B^+ = (B^T B)^{-1} B^T` for ``B`` of full column rank (exact for symbols)."""
    b = sp.Matrix(b)
    if b.rows == b.cols:
        return b.inv()
    return (b.T * b).inv() * b.T


def conserved_quantities(flow: LinearFlow) -> dict:
    r"""The conserved quantities of the flow, one per hidden layer (see the module docstring).

    Returns
    -------
    dict
        Name (``"Q_1"``, ...) to a symmetric sympy matrix ``(n_l, n_l)``:
        BP :math:`W_l W_l^T - W_{l+1}^T W_{l+1}`;
        FA :math:`W_l W_l^T - B_{l+1} W_{l+1} - (B_{l+1} W_{l+1})^T`;
        DFA :math:`W_l W_l^T - A_l W_{l+1} - (A_l W_{l+1})^T`,
        :math:`A_l = B_l B_{l+1}^+`, :math:`B_L = I`.
        For the scalar FA chain ``Q_1 = a1**2 - 2*c*a2``.
    """
    return dict(_conserved_quantities(flow))


@functools.lru_cache(maxsize=128)
def _conserved_quantities(flow: LinearFlow) -> tuple:
    weights = [sp.Matrix(w) for w in flow.weights]
    out = []
    for l in range(len(weights) - 1):
        w, above = weights[l], weights[l + 1]
        if flow.rule == "bp":
            q = w * w.T - above.T * above
        else:
            if flow.rule == "fa":
                a = sp.Matrix(flow.feedback[l])
            else:
                top = l + 1 == len(weights) - 1
                b_above = sp.eye(flow.sizes[-1]) if top else sp.Matrix(flow.feedback[l + 1])
                a = sp.Matrix(flow.feedback[l]) * _pinv_full_column_rank(b_above)
            cross = a * above
            q = w * w.T - cross - cross.T
        out.append((f"Q_{l + 1}", sp.ImmutableMatrix(q.applyfunc(sp.expand))))
    return tuple(out)


def is_zero(expr) -> bool:
    """Whether a sympy expression or matrix simplifies to exactly zero."""
    if isinstance(expr, sp.MatrixBase):
        return all(is_zero(e) for e in expr)
    e = sp.expand(expr)
    return e == 0 or sp.cancel(sp.together(e)) == 0


@functools.lru_cache(maxsize=128)
def jacobian(flow: LinearFlow) -> sp.ImmutableMatrix:
    r"""The Jacobian :math:`\partial \dot w_i / \partial w_j` of the flow in :attr:`LinearFlow.state` order."""
    return sp.ImmutableMatrix(flow.vector.jacobian(sp.Matrix(flow.state)))


def fixed_points(flow: LinearFlow) -> list[dict]:
    r"""All fixed points of the flow, by ``sympy.solve`` on :math:`\dot W = 0`.

    Meant for the scalar chains (a handful of polynomial equations); the feedback
    and the target are treated as generic nonzero constants.

    Returns
    -------
    list of dict
        Each a solution ``{symbol: expression}``; symbols missing from a
        solution are free (the solution is a manifold).
    """
    generic = {p: sp.Symbol(p.name, real=True, nonzero=True) for p in flow.parameters}
    equations = [sp.expand(f.subs(generic)) for f in flow.vector]
    solutions = sp.solve(equations, list(flow.state), dict=True)
    back = {v: k for k, v in generic.items()}
    return [{k: sp.sympify(v).subs(back) for k, v in sol.items()} for sol in solutions]


def eigenvalues_at(flow: LinearFlow, point: dict) -> dict:
    """Eigenvalues (with multiplicities) of the Jacobian at ``point`` (``{symbol: value}``)."""
    j = jacobian(flow).subs(point)
    return {sp.simplify(k): v for k, v in j.eigenvals().items()}


# --- numerics ------------------------------------------------------------------------------------

def _flatten(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])


def state_vector(weights) -> np.ndarray:
    """Flatten ``[W_1, ..., W_L]`` (numpy, ``(n_l, n_{l-1})`` each) into the state order of a flow."""
    return _flatten(weights)


def state_weights(flow: LinearFlow, vector) -> list[np.ndarray]:
    """Split a state vector back into the weight matrices of ``flow``."""
    out, start = [], 0
    for w in flow.weights:
        size = w.rows * w.cols
        out.append(np.asarray(vector[start:start + size], dtype=float).reshape(w.rows, w.cols))
        start += size
    return out


@functools.lru_cache(maxsize=64)
def _lambdified(expressions: tuple, symbols: tuple):
    return sp.lambdify(symbols, list(expressions), modules="numpy")


def numeric_field(flow: LinearFlow):
    r"""The vector field as a numpy function.

    Returns
    -------
    callable
        ``f(weights, feedback, target) -> list of arrays``: :math:`\dot W_l` for
        numeric ``weights`` ``[W_1, ...]``, ``feedback`` (compute_updates order,
        without ensemble axis) and ``target`` ``S``.
    """
    fn = _lambdified(tuple(flow.vector), flow.state + flow.parameters)

    def field(weights, feedback, target):
        args = _flatten(weights).tolist() + _flatten(list(feedback or []) + [target]).tolist()
        return state_weights(flow, np.asarray(fn(*args), dtype=float))

    return field


def numeric_quantity(expr, flow: LinearFlow):
    """``expr`` (a sympy matrix or expression of the flow's symbols) as ``f(weights, feedback, target)``."""
    matrix = sp.Matrix(expr) if isinstance(expr, sp.MatrixBase) else sp.Matrix([[expr]])
    fn = _lambdified(tuple(matrix), flow.state + flow.parameters)
    shape = matrix.shape

    def quantity(weights, feedback, target):
        args = _flatten(weights).tolist() + _flatten(list(feedback or []) + [target]).tolist()
        return np.asarray(fn(*args), dtype=float).reshape(shape)

    return quantity


def integrate_flow(flow: LinearFlow, weights0, feedback, target, t_final: float, *, n_points: int = 50,
                   rtol: float = 1e-10, atol: float = 1e-12):
    r"""Integrate the flow from ``weights0`` to ``t_final`` with ``scipy.integrate.solve_ivp`` (RK45).

    Returns
    -------
    t : ndarray ``(T,)``
    weights : list of list of ndarray
        The weights at each time of ``t``.
    """
    from scipy.integrate import solve_ivp

    fn = _lambdified(tuple(flow.vector), flow.state + flow.parameters)
    params = _flatten(list(feedback or []) + [target]).tolist()

    def rhs(_t, y):
        return np.asarray(fn(*y.tolist(), *params), dtype=float)

    times = np.linspace(0.0, t_final, n_points)
    sol = solve_ivp(rhs, (0.0, t_final), state_vector(weights0), t_eval=times, rtol=rtol, atol=atol,
                    method="RK45")
    if not sol.success:  # pragma: no cover - a stiff or blown-up instance
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.t, [state_weights(flow, sol.y[:, k]) for k in range(sol.y.shape[1])]


def whitened_data(target, n_samples: int, rng: np.random.Generator):
    r"""Inputs with :math:`X^T X/N = I` exactly and targets :math:`Y = X S^T`, so :math:`\Sigma_{yx} = S`.

    Returns
    -------
    x : ndarray ``(N, n_0)``
    y : ndarray ``(N, n_L)``
    """
    target = np.atleast_2d(np.asarray(target, dtype=float))
    n_in = target.shape[1]
    if n_samples < n_in:
        raise ValueError(f"whitened inputs need n_samples >= {n_in}, got {n_samples}")
    x = rng.normal(size=(n_samples, n_in))
    q, _ = np.linalg.qr(x)
    x = q * np.sqrt(n_samples)
    return x, x @ target.T


# --- the scalar chains ---------------------------------------------------------------------------

def scalar_fa_limit(a1: float, a2: float, c: float, s: float) -> tuple[float, float]:
    r"""Where the scalar FA chain's gradient flow from ``(a1, a2)`` ends (ours).

    The flow :math:`\dot a_1 = -c(a_1 a_2 - s)`, :math:`\dot a_2 = -a_1(a_1 a_2 - s)`
    conserves :math:`q = a_1^2 - 2 c a_2`, so it moves on the parabola
    :math:`a_2 = (a_1^2 - q)/(2c)`, where :math:`\dot a_1 = -p(a_1)/2` with the cubic
    :math:`p(a) = a^3 - q a - 2 c s`. ``a_1`` therefore runs monotonically to
    the nearest root of ``p`` in the direction of :math:`-p(a_1(0))`; that root
    is stable (:math:`p' = 3a^2 - q = 2(a_1^2 + c a_2) \ge 0`, the transverse
    eigenvalue of the hyperbola :math:`a_1 a_2 = s` is :math:`-(a_1^2 + c a_2)`).

    Returns
    -------
    (a1, a2) : the limit, on the hyperbola ``a1 a2 = s``.
    """
    q = conserved_scalar_fa(a1, a2, c)
    roots = np.roots([1.0, 0.0, -q, -2.0 * c * s])
    real = np.sort(roots[np.abs(roots.imag) <= 1e-9 * max(1.0, np.max(np.abs(roots)))].real)
    p0 = a1 ** 3 - q * a1 - 2 * c * s
    if p0 > 0:
        candidates = real[real <= a1]
        limit = candidates.max() if candidates.size else real.min()
    elif p0 < 0:
        candidates = real[real >= a1]
        limit = candidates.min() if candidates.size else real.max()
    else:
        limit = a1
    return float(limit), float((limit ** 2 - q) / (2 * c))


def conserved_scalar_fa(a1, a2, c):
    r"""The scalar FA chain's conserved quantity :math:`a_1^2 - 2 c a_2` (numeric)."""
    expr = conserved_quantities(linear_flow("fa", (1, 1, 1)))["Q_1"][0, 0]
    return float(expr.subs({sp.Symbol("a1", real=True): a1, sp.Symbol("a2", real=True): a2,
                            sp.Symbol("c", real=True): c}))
