r"""Convex programs of this project: programs, solvers and certificates.

* :mod:`theory.convex.top_classifier`: the top classifier of the layerwise
  algorithm on fixed features (multinomial logistic / squared hinge with L2),
  solved by cvxpy + Clarabel or L-BFGS, with a Fenchel-duality certificate.
* :mod:`theory.convex.arrangements`: the hyperplane arrangement patterns
  :math:`D_i = \mathrm{diag}(1[X g \ge 0])` of a data set, enumerated exactly
  (points in general position) or sampled by Gaussian gates, and the count
  formula :math:`2\sum_{k<r}\binom{n-1}{k}`.
* :mod:`theory.convex.relu`: the exact convex program of a two-layer ReLU
  network with weight decay (Pilanci & Ergen 2020), :func:`two_layer_relu`,
  its dual, the recovery map to a network and the certificate; the gated-ReLU
  relaxation and its cone decomposition (Mishkin et al. 2022).
* :mod:`theory.convex.first_order`: an accelerated proximal-gradient (FISTA)
  solver of the gated-ReLU group lasso, batched over an ensemble axis, on any
  array-API namespace (numpy, CuPy, array-api-strict).
* :mod:`theory.convex.augmented`: an augmented Lagrangian solver of the ReLU program itself (cone
  constraints kept), FISTA with backtracking inside, batched over an ensemble axis on the array API;
  ``two_layer_relu(..., solver="al")``.
* :mod:`theory.convex.active_set`: the ReLU program solved exactly by an active-set Newton method
  on the cones' faces, with a certificate, :func:`active_set_relu`; ``two_layer_relu(..., solver="active-set")``
  (what ``"auto"`` picks for programs too large for Clarabel).
* :mod:`theory.convex.layerwise`: greedy layerwise training by convex steps.
* :mod:`theory.convex.vector`: vector-output networks (Sahiner et al. 2021): the gated
  nuclear-norm relaxation, an exact dual norm for small ``d``, and a certified sandwich
  of the global optimum, :func:`two_layer_relu_vector`.
"""

from .top_classifier import (  # noqa: F401  (the public names of the former module theory.convex)
    CVXPY_MAX_SIZE,
    LOSSES,
    METHODS,
    Certificate,
    Solution,
    TopClassifierProblem,
    certify,
    dual_objective,
    minimize,
    objective,
    sgd_top_classifier,
    solve_cvxpy,
    solve_lbfgs,
    solve_top_classifier,
    top_classifier,
)
from .active_set import ActiveSetResult, active_set_relu  # noqa: F401,E402
from .arrangements import arrangement_count, exact_arrangements, sample_arrangements  # noqa: F401,E402
from .relu import (  # noqa: F401,E402
    ReluCertificate,
    ReluProgram,
    ReluSolution,
    cone_decompose,
    gated_relu,
    nonconvex_objective,
    prune_blocks,
    relu_dual,
    two_layer_relu,
    two_layer_relu_columns,
)
from .vector import VectorSolution, one_vs_all_network, two_layer_relu_vector, vector_objective  # noqa: F401,E402
