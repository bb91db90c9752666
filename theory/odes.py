r"""Gradient-flow ODEs of BP, FA and DFA for deep linear networks (any depth).

A deep linear network :math:`\hat y = W_L \cdots W_1 x` trained on the mean
squared error :math:`L = \frac{1}{2N}\sum_n \lVert \hat y_n - y_n\rVert^2` sees
its data only through the input covariance :math:`\Sigma_{xx} = X^T X / N` and the
input-output correlation :math:`\Sigma_{yx} = Y^T X / N`. With the residual

.. math:: E = \Sigma_{yx} - W_L \cdots W_1 \Sigma_{xx} \quad (n_L \times n_0)

(:math:`-E` is the batch mean of :math:`e\, x^T`, :math:`e = \hat y - y`) and the
products :math:`P_{<l} = W_{l-1} \cdots W_1` (identity for :math:`l = 1`), the
update :math:`\Delta W_l = \operatorname{mean}_n \delta_{l,n} h_{l-1,n}^T` of each rule
(:mod:`sim.rules`) gives the gradient flow :math:`\dot W_l = -\Delta W_l`
(time :math:`t = \eta k`, DESIGN.md):

========  ==========================================================================
rule      :math:`\dot W_l` for :math:`l < L` (all rules: :math:`\dot W_L = E\, P_{<L}^T`)
========  ==========================================================================
``bp``    :math:`(W_L \cdots W_{l+1})^T\, E\, P_{<l}^T`
``fa``    :math:`B_{l+1} B_{l+2} \cdots B_L\, E\, P_{<l}^T`, :math:`B_{l+1}` ``(n_l, n_{l+1})``
``dfa``   :math:`B_l\, E\, P_{<l}^T`, :math:`B_l` ``(n_l, n_L)``
========  ==========================================================================

Weights carry the leading ensemble axis ``(E, n_l, n_{l-1})`` of DESIGN.md (a 2-D
matrix is taken as one member). :func:`gradient_flow_field` is a pure function
of arrays (any array-API namespace); :func:`integrate_gradient_flow` integrates it
with ``scipy.integrate.solve_ivp`` on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.backend import get_namespace, namespace, to_host
from sim.lazy import lazy_callable
from sim.rules import get_rule, rule_updates

solve_ivp = lazy_callable("scipy.integrate", "solve_ivp")  # imported at the first call (sim.lazy)

__all__ = ["covariances", "gradient_flow_field", "FlowSolution", "integrate_gradient_flow", "integrate_rule_flow",
           "euler_error_coefficient"]


def covariances(x, y):
    r"""The data statistics of the linear flow: :math:`\Sigma_{xx} = X^TX/N` and :math:`\Sigma_{yx} = Y^TX/N`.

    ``x`` ``(N, n_0)`` and ``y`` ``(N, n_L)`` (host or device arrays, one data set).
    """
    xp = namespace(x, y)
    n = x.shape[-2]
    return xp.matmul(xp.matrix_transpose(x), x) / n, xp.matmul(xp.matrix_transpose(y), x) / n


def _members(a):
    return a if a.ndim == 3 else a[None, ...]


def gradient_flow_field(rule, weights, sigma_yx, sigma_xx=None, feedback=None) -> list:
    r"""The gradient-flow velocities :math:`\dot W_l = -\Delta W_l` of a deep linear network.

    Parameters
    ----------
    rule : {"bp", "fa", "dfa"}
        The learning rule (see the module docstring for each formula).
    weights : list of arrays
        ``W_1 .. W_L``, each ``(E, n_l, n_{l-1})`` or ``(n_l, n_{l-1})``.
    sigma_yx : array
        :math:`\Sigma_{yx}`, ``(n_L, n_0)`` or ``(E, n_L, n_0)``.
    sigma_xx : array, optional
        :math:`\Sigma_{xx}`, ``(n_0, n_0)`` or ``(E, n_0, n_0)``; default the
        identity (whitened inputs).
    feedback : list of arrays, optional
        FA: ``B_2 .. B_L``; DFA: ``B_1 .. B_{L-1}`` (shapes as in :mod:`sim.rules`).

    Returns
    -------
    list of arrays
        :math:`\dot W_1 .. \dot W_L`, each ``(E, n_l, n_{l-1})``. For the same
        weights this equals ``-sim.rules.compute_updates(rule, weights, x, y)`` on any
        data ``(x, y)`` whose statistics are ``sigma_xx, sigma_yx``.
    """
    rule = get_rule(rule)
    weights = [_members(w) for w in weights]
    xp = namespace(*weights)
    n_layers = len(weights)
    if rule.feedback is not None:
        expected = n_layers - 1
        if feedback is None or len(feedback) != expected:
            raise ValueError(f"rule {rule.name!r} needs {expected} feedback matrices")
    below = [None] * n_layers  # P_{<l}
    product = None
    for i, w in enumerate(weights):
        below[i] = product
        product = w if product is None else xp.matmul(w, product)
    model = product if sigma_xx is None else xp.matmul(product, sigma_xx)
    residual = sigma_yx - model
    velocities = [None] * n_layers
    carried = residual  # the residual carried down to the output of layer l (n_l x n_0)
    for i in range(n_layers - 1, -1, -1):
        right = residual if i == n_layers - 1 else carried
        velocities[i] = right if below[i] is None else xp.matmul(right, xp.matrix_transpose(below[i]))
        if i == 0:
            break
        if rule.name == "bp":
            carried = xp.matmul(xp.matrix_transpose(weights[i]), carried)
        elif rule.name == "fa":
            carried = xp.matmul(feedback[i - 1], carried)
        elif rule.name == "dfa":
            carried = xp.matmul(feedback[i - 1], residual)
        else:  # pragma: no cover - only the linear-network rules have a flow here
            raise ValueError(f"no gradient-flow formula for rule {rule.name!r}")
    return velocities


@dataclass(frozen=True)
class FlowSolution:
    """Weights of a gradient flow at requested times.

    ``times`` ``(T,)``; ``weights[l]`` is ``(T, E, n_l, n_{l-1})`` on the host.
    """

    times: np.ndarray
    weights: list

    def at(self, index: int) -> list:
        """The weights ``[W_1 .. W_L]`` (each ``(E, n_l, n_{l-1})``) at ``times[index]``."""
        return [w[index] for w in self.weights]


def integrate_gradient_flow(rule, weights, times, sigma_yx, sigma_xx=None, feedback=None, *,
                            rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853") -> FlowSolution:
    r"""Integrate the gradient flow of :func:`gradient_flow_field` from ``weights``.

    Parameters
    ----------
    rule, weights, sigma_yx, sigma_xx, feedback
        As in :func:`gradient_flow_field` (moved to the host).
    times : array_like
        Non-negative, non-decreasing times :math:`t = \eta k` at which the weights are returned.
    rtol, atol : float
        ``solve_ivp`` tolerances (tight by default, so that the integration error is
        far below the :math:`O(\eta)` difference to gradient descent).
    method : str
        ``solve_ivp`` method (default the 8th-order ``DOP853``).

    Returns
    -------
    FlowSolution
    """
    weights = [np.asarray(to_host(_members(w)), dtype=float) for w in weights]
    sigma_yx = np.asarray(to_host(sigma_yx), dtype=float)
    sigma_xx = None if sigma_xx is None else np.asarray(to_host(sigma_xx), dtype=float)
    feedback = None if feedback is None else [np.asarray(to_host(f), dtype=float) for f in feedback]
    shapes = [w.shape for w in weights]
    sizes = [int(np.prod(shape)) for shape in shapes]
    splits = np.cumsum(sizes)[:-1]

    def unpack(flat):
        return [part.reshape(shape) for part, shape in zip(np.split(flat, splits), shapes)]

    def field(_, flat):
        return np.concatenate([v.ravel() for v in gradient_flow_field(rule, unpack(flat), sigma_yx, sigma_xx,
                                                                      feedback)])

    start = np.concatenate([w.ravel() for w in weights])
    times, states = _solve(field, start, times, rtol, atol, method)
    out = [np.empty((times.size, *shape)) for shape in shapes]
    for j in range(times.size):
        for arr, part in zip(out, unpack(states[:, j])):
            arr[j] = part
    return FlowSolution(times, out)


def _solve(field, start, times, rtol, atol, method):
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or np.any(times < 0) or np.any(np.diff(times) < 0):
        raise ValueError("times must be a 1-D non-decreasing array of non-negative numbers")
    if times.size == 0 or times[-1] == 0:
        return times, np.repeat(np.asarray(start)[:, None], times.size, axis=1)
    distinct, index = np.unique(times, return_inverse=True)  # solve_ivp wants strictly increasing times
    sol = solve_ivp(field, (0.0, float(distinct[-1])), start, method=method, t_eval=distinct, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return times, sol.y[:, index]


def integrate_rule_flow(rule, weights, x, y, times, *, feedback=None, activation: str = "linear", loss: str = "mse",
                        rtol: float = 1e-10, atol: float = 1e-12, method: str = "DOP853") -> FlowSolution:
    r"""Integrate the gradient flow :math:`\dot W_l = -\Delta W_l` of *the engine's* rule on a full batch.

    Unlike :func:`integrate_gradient_flow`, the velocity is computed by
    :func:`sim.rules.rule_updates` itself, so this is the flow of whatever the
    simulator does (any depth, activation and loss; a rule broken on purpose is
    integrated as broken). The whole ensemble ``(E, ...)`` moves in one ODE.

    Parameters
    ----------
    rule : str
        Rule name (looked up in :data:`sim.rules.RULES` at every evaluation).
    weights : list of arrays
        ``W_1 .. W_L``, ``(E, n_l, n_{l-1})``.
    x, y : arrays
        The full batch, ``(N, n_0)`` and ``(N, n_L)``.
    times : array_like
        Non-negative, non-decreasing output times.
    feedback, activation, loss
        As in :func:`sim.rules.compute_updates`.
    rtol, atol, method
        ``solve_ivp`` settings.
    """
    xp = get_namespace("numpy")
    weights = [np.asarray(to_host(w), dtype=float) for w in weights]
    x, y = xp.asarray(np.asarray(to_host(x), dtype=float)), xp.asarray(np.asarray(to_host(y), dtype=float))
    feedback = None if feedback is None else [xp.asarray(np.asarray(to_host(f), dtype=float)) for f in feedback]
    shapes = [w.shape for w in weights]
    splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def unpack(flat):
        return [xp.asarray(part.reshape(shape)) for part, shape in zip(np.split(flat, splits), shapes)]

    def field(_, flat):
        upd = rule_updates(rule, unpack(flat), x, y, activation=activation, loss=loss, feedback=feedback,
                           validate=False)
        return -np.concatenate([np.asarray(u).ravel() for u in upd.weights])

    start = np.concatenate([w.ravel() for w in weights])
    times, states = _solve(field, start, times, rtol, atol, method)
    out = [np.empty((times.size, *shape)) for shape in shapes]
    for j in range(times.size):
        for arr, part in zip(out, unpack(states[:, j])):
            arr[j] = np.asarray(part)
    return FlowSolution(times, out)


def euler_error_coefficient(field, jacobian, start, times, *, rtol: float = 1e-10, atol: float = 1e-13,
                            method: str = "DOP853"):
    r"""The first-order global error of gradient descent (explicit Euler) on an ODE.

    Gradient descent with step :math:`\eta` on :math:`\dot y = f(y)` is the explicit
    Euler method; its iterates satisfy :math:`y_k = y(\eta k) + \eta\, \varepsilon(\eta k)
    + O(\eta^2)` with the error coefficient solving the variational equation

    .. math:: \dot\varepsilon = J(y)\,\varepsilon - \tfrac12 J(y) f(y), \qquad \varepsilon(0) = 0,

    :math:`J = \partial f/\partial y` (the local error of one step is
    :math:`-\tfrac{\eta^2}{2}\ddot y = -\tfrac{\eta^2}{2} J f`).

    Parameters
    ----------
    field : callable
        ``field(y) -> f(y)`` for a 1-D state ``y``.
    jacobian : callable
        ``jacobian(y) -> J(y)``, shape ``(n, n)``.
    start : array_like
        :math:`y(0)`.
    times : array_like
        Non-negative, non-decreasing times.

    Returns
    -------
    (ndarray, ndarray)
        The flow :math:`y(t)` and the coefficient :math:`\varepsilon(t)`, each ``(T, n)``.
    """
    start = np.asarray(start, dtype=float).ravel()
    n = start.size

    def rhs(_, z):
        y, eps = z[:n], z[n:]
        f, jac = np.asarray(field(y), dtype=float), np.asarray(jacobian(y), dtype=float)
        return np.concatenate([f, jac @ eps - 0.5 * jac @ f])

    _, states = _solve(rhs, np.concatenate([start, np.zeros(n)]), times, rtol, atol, method)
    return states[:n].T, states[n:].T
