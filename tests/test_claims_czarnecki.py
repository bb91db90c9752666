"""The Czarnecki et al. (2017) claims (theory.claims.czarnecki): what they rest on (generic tests: test_claims.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from theory.claims import czarnecki as cz
from theory.claims import REGISTRY, load_claims

load_claims()


def test_the_module_registers_its_claims():
    ids = {c.id for c in REGISTRY.values() if c.check.__module__ == cz.__name__}
    assert ids == {"sg.epsilon_tracking", "sg.deep_linear_converges", "sg.representations_differ"}
    for claim_id in ids:
        c = REGISTRY[claim_id]
        assert c.source.startswith("Czarnecki et al. 2017") and c.statement and c.conditions and c.rules


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_reduced_rank_loss_matches_the_best_projection_of_the_fit(seed):
    """Eckart-Young on the coefficients against the best rank-r projection of the fitted values."""
    rng = np.random.default_rng(seed)
    sizes, x, y = cz._learned_task(rng)
    rank = sizes[1]
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    fitted = x @ coef
    u = np.linalg.svd(fitted, full_matrices=False)[0][:, :rank]
    direct = float(np.sum((y - u @ u.T @ fitted) ** 2) / (2 * x.shape[0]))
    np.testing.assert_allclose(cz.reduced_rank_loss(x, y, rank), direct, rtol=1e-10)
    assert cz.reduced_rank_loss(x, y, rank) > cz.least_squares_loss(x, y)


def test_least_squares_loss_is_the_normal_equations_optimum():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 3))
    coef = np.linalg.solve(x.T @ x, x.T @ y)
    np.testing.assert_allclose(cz.least_squares_loss(x, y), np.sum((x @ coef - y) ** 2) / 40, rtol=1e-12)


def test_the_bottleneck_needs_the_lower_layers_to_learn():
    """Why the claim is not trivial: the top layer alone, on frozen random lower layers, stays far above L_r."""
    rng = np.random.default_rng(2)
    sizes, x, y = cz._learned_task(rng)
    w1, w2 = rng.normal(size=(sizes[1], sizes[0])), rng.normal(size=(sizes[2], sizes[1]))
    h = x @ w1.T @ w2.T
    top, *_ = np.linalg.lstsq(h, y, rcond=None)
    frozen = float(np.sum((h @ top - y) ** 2) / (2 * x.shape[0]))
    best = cz.reduced_rank_loss(x, y, sizes[1])
    assert (frozen - best) / best > 0.05


def test_tracking_levels_are_realised_exactly():
    rng = np.random.default_rng(3)
    sizes, x, y, weights = cz._deep_linear_task(rng)
    losses, norms, realised, inner = cz._tracked_run(rng, 0.5, weights, x, y, steps=20, lr=0.1)
    np.testing.assert_allclose(realised, 0.5, rtol=1e-8)
    assert np.all(inner >= 0.5 - 1e-12) and np.all(np.diff(losses) < 0)


def test_plots_draw():
    from sim.plots import new_figure

    for claim_id in ("sg.epsilon_tracking", "sg.deep_linear_converges", "sg.representations_differ"):
        c = REGISTRY[claim_id]
        fig, (ax,) = new_figure(1)
        c.plot(c.check(0, 1), ax)
        assert ax.lines


@settings(max_examples=10, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_linear_cka_against_hsic_with_a_centring_matrix(seed):
    """CKA from Gram matrices (HSIC with H = I - 11^T/N), an independent formula, and its invariances."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(12, 4)), rng.normal(size=(12, 6))
    h = np.eye(12) - np.ones((12, 12)) / 12
    ka, kb = h @ a @ a.T @ h, h @ b @ b.T @ h
    direct = np.sum(ka * kb) / np.sqrt(np.sum(ka * ka) * np.sum(kb * kb))
    np.testing.assert_allclose(cz.linear_cka(a, b), direct, rtol=1e-10)
    q = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    np.testing.assert_allclose(cz.linear_cka(a, 3.0 * a @ q + 1.0), 1.0, rtol=1e-12)


def test_exact_synthetic_gradients_reproduce_bp():
    with cz.exact_synthetic_gradients():
        out = cz.representation_run(np.random.default_rng(0))
    np.testing.assert_allclose(out["cka"], 1.0, rtol=1e-9)
