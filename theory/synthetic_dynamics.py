r"""Gradient flow of a two-layer linear network that learns through a linear synthetic-gradient module.

Setting (the conventions of DESIGN.md and :mod:`sim.synthetic`): the network
:math:`\hat y = W_2 W_1 x` with hidden layer :math:`h = W_1 x`, the ``mse`` loss,
whitened zero-mean inputs (:math:`E[xx^T] = I`, :math:`E[x] = 0`) and targets
:math:`y = S x`. Then

.. math:: L = \tfrac12 \lVert W_2 W_1 - S\rVert_F^2 ,

the true gradient at the hidden layer is :math:`g = G x` with
:math:`G = W_2^T(W_2 W_1 - S)`, and the module of the hidden layer,
:math:`\mathrm{SG}(h, y) = A h + C y + c` (cDNI; DNI has no ``C``), predicts
:math:`s = M x + c` with :math:`M = A W_1 + C S`. The joint gradient flow at time
:math:`t = \eta k` with the modules' learning-rate ratio :math:`\beta = \eta_{SG}/\eta` is

.. math::
    \dot W_1 = -M, \qquad \dot W_2 = -\partial L/\partial W_2 = -(W_2 W_1 - S) W_1^T,

    \dot\theta = -\beta\, \partial L_{SG}/\partial\theta,\quad
    L_{SG} = \tfrac12 E\lVert s - g\rVert^2 = \tfrac12\big(\lVert M - G\rVert_F^2 + \lVert c\rVert^2\big),
    \quad \theta \in \{A, C, c\},

where the target :math:`G` is held fixed when differentiating :math:`L_{SG}` (the
module regresses on the true gradient; only the top layer sees the loss).
:func:`derive_flow` builds this field with sympy from :math:`L` and :math:`L_{SG}`;
:func:`numeric_field` turns it into a numpy function for
:func:`integrate` (``scipy.integrate.solve_ivp``) and :func:`simulate` runs the
same system through the engine (:func:`sim.train.train` with the rules ``sg`` /
``cdni``) on whitened data, where one step is exactly an Euler step of the flow.

Fixed points (:func:`fixed_points`, :func:`stability`) of the scalar system
``n_in = n_hidden = n_out = 1`` with teacher ``s``:

* cDNI: the solution set :math:`w_1 w_2 = s` with the module on the line
  :math:`a w_1 + b s = 0` (attracting, two zero eigenvalues along the set), and
  the origin :math:`w_1 = w_2 = b = 0` (a saddle);
* DNI: the solution set :math:`w_1 w_2 = s`, :math:`a = 0` (attracting), and the
  *spurious* set :math:`w_1 = 0` with any :math:`w_2, a` (:math:`c = 0`), whose
  transverse eigenvalue is :math:`-a`: it attracts where :math:`a > 0`, so DNI can
  stall with a dead hidden unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.lazy import lazy_callable, lazy_module

sp = lazy_module("sympy")  # imported at the first use (sim.lazy)
solve_ivp = lazy_callable("scipy.integrate", "solve_ivp")

__all__ = ["SGFlow", "derive_flow", "numeric_field", "pack", "unpack", "integrate", "FlowSolution", "simulate",
           "fixed_points", "stability", "classify"]


@dataclass(frozen=True)
class SGFlow:
    """The symbolic joint flow of network and module (see the module docstring).

    Attributes
    ----------
    sizes : tuple
        ``(n_in, n_hidden, n_out)``.
    label : bool
        cDNI (the module reads ``y``) or DNI.
    blocks : dict
        Name (``W1``, ``W2``, ``A``, ``C``, ``c``) -> sympy Matrix of the state symbols.
    state : tuple
        All state symbols, in the order of :func:`pack`.
    field : sympy.Matrix
        :math:`\\dot z` as a column, same order.
    teacher : sympy.Matrix
        The symbols :math:`S` ``(n_out, n_in)``.
    beta : sympy.Symbol
        The learning-rate ratio :math:`\\eta_{SG}/\\eta`.
    loss, module_loss : sympy.Expr
        :math:`L` and :math:`L_{SG}`.
    """

    sizes: tuple
    label: bool
    blocks: dict
    state: tuple
    field: sp.Matrix
    teacher: sp.Matrix
    beta: sp.Symbol
    loss: sp.Expr
    module_loss: sp.Expr


def _matrix(name: str, rows: int, cols: int) -> sp.Matrix:
    if rows == cols == 1:
        return sp.Matrix([[sp.Symbol(name, real=True)]])
    return sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"{name}_{i}{j}", real=True))


def _check_sizes(n_in, n_hidden, n_out) -> tuple:
    sizes = (n_in, n_hidden, n_out)
    if any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in sizes):
        raise ValueError(f"n_in, n_hidden and n_out must be positive integers, got {sizes}")
    return tuple(int(n) for n in sizes)


def derive_flow(n_in: int = 1, n_hidden: int = 1, n_out: int = 1, *, label: bool = True) -> SGFlow:
    r"""Derive the joint gradient flow of network and module with sympy.

    The network field is :math:`-\partial L/\partial W_2` for the top layer and
    :math:`-M` (the synthetic update) for :math:`W_1`; the module field is
    :math:`-\beta\,\partial L_{SG}/\partial\theta` with the target :math:`G` held fixed.
    Scalar sizes give the readable names ``w1, w2, a, b, c``.
    """
    n_in, n_hidden, n_out = _check_sizes(n_in, n_hidden, n_out)
    scalar = n_in == n_hidden == n_out == 1
    names = ("w1", "w2", "a", "b", "c", "s") if scalar else ("W1", "W2", "A", "C", "c", "S")
    w1, w2 = _matrix(names[0], n_hidden, n_in), _matrix(names[1], n_out, n_hidden)
    a = _matrix(names[2], n_hidden, n_hidden)
    c_label = _matrix(names[3], n_hidden, n_out) if label else sp.zeros(n_hidden, n_out)
    c = _matrix(names[4], n_hidden, 1)
    teacher = _matrix(names[5], n_out, n_in)
    beta = sp.Symbol("beta", positive=True)
    residual = w2 * w1 - teacher
    loss = sp.Rational(1, 2) * sum(e ** 2 for e in residual)
    target = w2.T * residual  # G, held fixed when differentiating the module loss
    g_symbols = _matrix("_G", n_hidden, n_in)
    predicted = a * w1 + c_label * teacher
    module_loss_fixed = sp.Rational(1, 2) * (sum(e ** 2 for e in (predicted - g_symbols)) + sum(e ** 2 for e in c))
    blocks = {"W1": w1, "W2": w2, "A": a}
    if label:
        blocks["C"] = c_label
    blocks["c"] = c
    substitution = dict(zip(list(g_symbols), list(target)))
    rates = {"W1": -predicted, "W2": w2.applyfunc(lambda e: -sp.diff(loss, e))}
    for name in ("A", "C", "c"):
        if name in blocks:
            rates[name] = blocks[name].applyfunc(lambda e: -beta * sp.diff(module_loss_fixed, e).subs(substitution))
    state, field = [], []
    for name, block in blocks.items():
        state += list(block)
        field += [sp.expand(e) for e in rates[name]]
    module_loss = module_loss_fixed.subs(substitution)
    return SGFlow((n_in, n_hidden, n_out), bool(label), blocks, tuple(state), sp.Matrix(field), teacher, beta,
                  sp.expand(loss), sp.expand(module_loss))


def pack(flow: SGFlow, **blocks) -> np.ndarray:
    """The state vector of named blocks (``W1``, ``W2``, ``A``, ``C``, ``c``; missing ones are zero)."""
    unknown = {k for k, v in blocks.items() if v is not None} - set(flow.blocks)
    if unknown:
        raise ValueError(f"unknown blocks {sorted(unknown)}; this flow has {', '.join(flow.blocks)}")
    parts = []
    for name, block in flow.blocks.items():
        value = np.zeros(block.shape) if blocks.get(name) is None else np.asarray(blocks[name], dtype=float)
        if value.shape != block.shape:
            raise ValueError(f"block {name} must have shape {block.shape}, got {value.shape}")
        parts.append(value.ravel())
    return np.concatenate(parts)


def unpack(flow: SGFlow, z) -> dict:
    """The named blocks of a state vector ``z`` (or of states ``(T, D)``: blocks ``(T, rows, cols)``)."""
    z = np.asarray(z, dtype=float)
    if z.shape[-1] != len(flow.state):
        raise ValueError(f"a state of this flow has {len(flow.state)} entries, got {z.shape[-1]}")
    out, start = {}, 0
    for name, block in flow.blocks.items():
        size = block.shape[0] * block.shape[1]
        out[name] = z[..., start:start + size].reshape(*z.shape[:-1], *block.shape)
        start += size
    return out


def numeric_field(flow: SGFlow):
    """``f(z, teacher, beta) -> dz/dt`` as numpy (``teacher`` ``(n_out, n_in)``), lambdified from the sympy field."""
    fn = sp.lambdify([list(flow.state), list(flow.teacher), flow.beta], list(flow.field), "numpy")
    n = len(flow.state)

    def field(z, teacher, beta):
        teacher = np.asarray(teacher, dtype=float).reshape(flow.teacher.shape)
        return np.asarray(fn(np.asarray(z, dtype=float).reshape(n), teacher.ravel(), float(beta)), dtype=float)

    return field


def _loss_fn(flow: SGFlow):
    fn = sp.lambdify([list(flow.state), list(flow.teacher)], flow.loss, "numpy")
    return lambda z, teacher: float(fn(np.asarray(z, dtype=float).ravel(), np.asarray(teacher, dtype=float).ravel()))


@dataclass(frozen=True)
class FlowSolution:
    """Times ``t`` ``(T,)``, states ``(T, D)`` and the network loss ``(T,)`` of a trajectory."""

    t: np.ndarray
    states: np.ndarray
    loss: np.ndarray


def integrate(flow: SGFlow, z0, t_max: float, *, teacher, beta: float, t_eval=None, rtol: float = 1e-10,
              atol: float = 1e-12) -> FlowSolution:
    """Integrate the flow from ``z0`` to ``t_max`` with ``solve_ivp`` (LSODA)."""
    if not np.isfinite(t_max) or t_max <= 0:
        raise ValueError(f"t_max must be a positive finite time, got {t_max!r}")
    if not np.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a non-negative finite ratio of learning rates, got {beta!r}")
    field, loss = numeric_field(flow), _loss_fn(flow)
    t_eval = np.linspace(0.0, t_max, 101) if t_eval is None else np.asarray(t_eval, dtype=float)
    sol = solve_ivp(lambda t, z: field(z, teacher, beta), (0.0, float(t_max)), np.asarray(z0, dtype=float),
                    method="LSODA", t_eval=t_eval, rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - only for stiff, exploding settings
        raise ValueError(f"the flow could not be integrated: {sol.message}")
    states = sol.y.T
    return FlowSolution(sol.t, states, np.array([loss(z, teacher) for z in states]))


def simulate(flow: SGFlow, z0, *, teacher, lr: float, beta: float, steps: int, record_every: int = 1,
             n_samples: int | None = None, seed: int = 0) -> FlowSolution:
    """The same system through the engine: full-batch descent with the rule ``sg`` or ``cdni``.

    Inputs are whitened and zero-mean (:func:`sim.data.tasks.whitened_gaussian`,
    ``N = n_samples``, default ``4 n_in``) and ``y = S x``, so the batch updates are
    the population field and one step is an Euler step of length ``lr`` (times
    ``t = lr k``); the modules learn with ``lr * beta``. Each step is the
    trainer's (:func:`sim.train.train`): :func:`sim.rules.rule_updates`, then
    :func:`sim.synthetic.update_modules` on the same forward pass.
    """
    from sim import synthetic
    from sim.backend import shared_rng
    from sim.data.tasks import whitened_gaussian
    from sim.rules import rule_updates

    n_in, n_hidden, n_out = flow.sizes
    n_samples = 4 * n_in if n_samples is None else int(n_samples)
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int | np.integer) or record_every < 1:
        raise ValueError(f"record_every must be a positive integer, got {record_every!r}")
    teacher = np.asarray(teacher, dtype=float).reshape(n_out, n_in)
    x = whitened_gaussian(shared_rng(seed, "data"), n_samples, n_in)
    y = x @ teacher.T
    blocks = unpack(flow, z0)
    weights = [blocks["W1"][None], blocks["W2"][None]]
    inputs = ("hidden", "label") if flow.label else ("hidden",)
    params = {"hidden": blocks["A"][None], "bias": blocks["c"][None, :, 0]}
    if flow.label:
        params["label"] = blocks["C"][None]
    modules = synthetic.SyntheticGradients((params,), "linear", inputs, "true", np.array([lr * beta]), 1)
    rule = "cdni" if flow.label else "sg"
    times, states, losses = [], [], []
    for step in range(int(steps) + 1):
        upd = rule_updates(rule, weights, x, y, modules=modules, validate=step == 0)
        if step % record_every == 0 or step == steps:
            p = modules.params[0]
            times.append(lr * step)
            losses.append(float(upd.loss[0]))
            states.append(pack(flow, W1=weights[0][0], W2=weights[1][0], A=p["hidden"][0],
                               C=p["label"][0] if flow.label else None, c=p["bias"][0][:, None]))
        if step == steps:
            break
        modules = synthetic.update_modules(modules, upd, weights=weights, targets=y, activation="linear", step=step)
        weights = [w - lr * dw for w, dw in zip(weights, upd.weights)]
    return FlowSolution(np.asarray(times), np.stack(states), np.asarray(losses))


def fixed_points(flow: SGFlow) -> list[dict]:
    """The fixed-point families of the flow (``sympy.solve`` of ``field = 0``; use small sizes)."""
    return sp.solve(list(flow.field), list(flow.state), dict=True)


def stability(flow: SGFlow, point, *, teacher, beta: float) -> np.ndarray:
    """Eigenvalues of the Jacobian of the flow at a state ``point`` (vector or dict of symbols)."""
    jac = sp.lambdify([list(flow.state), list(flow.teacher), flow.beta], flow.field.jacobian(flow.state), "numpy")
    if isinstance(point, dict):
        point = [float(point.get(s, 0.0)) for s in flow.state]
    z = np.asarray(point, dtype=float).ravel()
    matrix = np.asarray(jac(z, np.asarray(teacher, dtype=float).ravel(), float(beta)), dtype=float)
    return np.linalg.eigvals(matrix)


def classify(eigenvalues, tol: float = 1e-9) -> str:
    """``"stable"`` (all Re < 0), ``"attracting-marginal"`` (Re <= 0 with zeros), or ``"unstable"``."""
    re = np.real(np.asarray(eigenvalues))
    if np.any(re > tol):
        return "unstable"
    return "attracting-marginal" if np.any(np.abs(re) <= tol) else "stable"
