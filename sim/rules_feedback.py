r"""The feedback of the sign-symmetry family, Kolen-Pollack and DRTP.

These rules differ from feedback alignment (FA) and direct feedback alignment
(DFA) only in where the feedback matrix comes from; :mod:`sim.rules` registers
them beside the others. With :math:`f'` the activation derivative at
:math:`a_l` and :math:`\delta_L = e = \hat y - y` the output error:

=========  ==========================================================================
rule       :math:`\delta_l` of a hidden layer
=========  ==========================================================================
``usf``    :math:`(B_{l+1}\delta_{l+1}) \odot f'`, :math:`B_{l+1} = \operatorname{sign}(W_{l+1}^T)`
``frsf``   as ``usf`` with :math:`B_{l+1} = |R_{l+1}| \odot \operatorname{sign}(W_{l+1}^T)`, ``R`` fixed random
``brsf``   as ``frsf`` with ``R`` drawn afresh for every batch
``kp``     :math:`(B_{l+1}\delta_{l+1}) \odot f'`, ``B`` learned by Kolen-Pollack
``drtp``   :math:`(B_l\,(-y)) \odot f'`, ``B_l`` fixed random ``(n_l, n_L)``
=========  ==========================================================================

* Sign symmetry (Liao, Leibo & Poggio 2016; Moskovitz et al. 2018; the names
  are biotorch's): the feedback has the signs of the forward weights and
  magnitudes all ones (``usf``, *uniform sign-concordant feedback*), random
  and redrawn for every batch (``brsf``) or random and fixed (``frsf``). The
  ``feedback`` of ``frsf`` and ``brsf`` holds the random magnitudes ``R``
  (drawn as FA's matrices, :func:`sim.rules.draw_feedback`; only ``|R|``
  counts); ``usf`` needs none.
* Kolen-Pollack (Akrout et al. 2019): ``B_{l+1}`` starts random and receives
  the transpose of ``W_{l+1}``'s update and the same weight decay
  :math:`\lambda`,

  .. math:: W \leftarrow W - \eta\,\Delta W - \eta\lambda W,\qquad
            B \leftarrow B - \eta\,\Delta W^T - \eta\lambda B,

  so that :math:`B_t - W_t^T = (1-\eta\lambda)^t (B_0 - W_0^T)` exactly (with
  plain SGD; the trainer's momentum moves only ``W``).
* DRTP, direct random target projection (Frenkel, Lefebvre & Bol 2021): DFA
  with the error replaced by the surrogate :math:`-y` whose sign is known
  before the output is computed (for one-hot targets the error of the target
  class is negative, of the others positive), so a hidden layer can update as
  soon as it has its input and the label: update- and backward-unlocked.
"""

from __future__ import annotations

import numpy as np

from .backend import namespace, to_device


def _transpose(xp, a):
    return xp.matrix_transpose(a)


def sign_feedback(weight, magnitude=None):
    r"""The sign-concordant feedback :math:`B = \operatorname{sign}(W^T)` (``usf``) or :math:`|R| \odot \operatorname{sign}(W^T)`.

    ``weight`` is ``W_{l+1}`` ``(E, n_{l+1}, n_l)``; ``magnitude`` (optional)
    ``R`` of shape ``(n_l, n_{l+1})`` or ``(E, n_l, n_{l+1})``. Returns ``B``
    of shape ``(E, n_l, n_{l+1})``.
    """
    xp = namespace(weight)
    signs = xp.sign(_transpose(xp, weight))
    return signs if magnitude is None else xp.abs(magnitude) * signs


def usf_signal(i, ctx):
    r""":math:`B_{l+1}\delta_{l+1}` with :math:`B_{l+1} = \operatorname{sign}(W_{l+1}^T)`, as rows: :math:`\delta\,\operatorname{sign}(W)`."""
    xp = namespace(ctx.signals[i + 1])
    return xp.matmul(ctx.signals[i + 1], xp.sign(ctx.weights[i + 1]))


def random_sign_signal(i, ctx):
    r""":math:`B_{l+1}\delta_{l+1}` with :math:`B_{l+1} = |R_{l+1}| \odot \operatorname{sign}(W_{l+1}^T)` (``frsf``, ``brsf``)."""
    xp = namespace(ctx.signals[i + 1])
    feedback_t = xp.abs(_transpose(xp, ctx.feedback[i])) * xp.sign(ctx.weights[i + 1])
    return xp.matmul(ctx.signals[i + 1], feedback_t)


def drtp_signal(i, ctx):
    r""":math:`B_l\,(-y)`, as rows :math:`-y B_l^T`: a fixed random projection of the targets."""
    xp = namespace(ctx.signals[-1])
    return -xp.matmul(xp.astype(ctx.targets, ctx.signals[-1].dtype), _transpose(xp, ctx.feedback[i]))


def usf_matrices(weights, feedback=None) -> list:
    """The feedback ``B_2 .. B_L`` ``usf`` uses on ``weights``."""
    return [sign_feedback(w) for w in weights[1:]]


def random_sign_matrices(weights, feedback) -> list:
    """The feedback ``B_2 .. B_L`` ``frsf`` / ``brsf`` use on ``weights`` with magnitudes ``feedback``."""
    return [sign_feedback(w, r) for w, r in zip(weights[1:], feedback)]


def kolen_pollack_step(feedback, weight_steps, decay, alive) -> list:
    r"""One Kolen-Pollack step of the feedback: :math:`B_{l+1} \leftarrow B_{l+1} - (\eta\Delta W_{l+1})^T - \eta\lambda B_{l+1}`.

    Parameters
    ----------
    feedback : list of arrays
        ``B_2 .. B_L``, each ``(n_l, n_{l+1})`` or ``(E, n_l, n_{l+1})``.
    weight_steps : list of arrays
        The steps ``eta * dW_1 .. eta * dW_L`` of the weights (without weight
        decay), each ``(E, n_l, n_{l-1})``.
    decay : array or None
        :math:`\eta\lambda` per member, ``(E,)``; ``None`` for no weight decay.
    alive : array
        ``(E,)`` booleans: members not alive keep their feedback.

    Returns
    -------
    list of arrays
        New arrays ``(E, n_l, n_{l+1})``; the inputs are not modified.
    """
    xp = namespace(*weight_steps)
    n_members = weight_steps[0].shape[0]
    keep = xp.reshape(alive, (n_members, 1, 1))
    new = []
    for b, step in zip(feedback, weight_steps[1:]):
        move = _transpose(xp, step)
        if decay is not None:
            move = move + xp.reshape(decay, (n_members, 1, 1)) * b
        new.append(xp.where(keep, b - move, b * xp.ones_like(move)))
    return new


def magnitude_shapes(sizes) -> list[tuple[int, int]]:
    """Shapes ``(n_l, n_{l+1})`` of the magnitudes ``R_2 .. R_L`` of ``frsf`` / ``brsf``."""
    return [(int(sizes[i]), int(sizes[i + 1])) for i in range(1, len(sizes) - 1)]


def draw_magnitudes(rngs, sizes, xp, dtype: str) -> list:
    r"""Fresh magnitudes for ``brsf``: member ``m`` draws :math:`R \sim \mathcal N(0, 1/n_{l+1})` from ``rngs[m]``.

    The distribution is :func:`sim.rules.draw_feedback`'s default (Gaussian,
    scale 1); one ``(E, n_l, n_{l+1})`` array per hidden layer, on ``xp``.
    """
    shapes = magnitude_shapes(sizes)
    host = [np.empty((len(rngs), *shape)) for shape in shapes]
    for m, rng in enumerate(rngs):
        for arr, (rows, cols) in zip(host, shapes):
            arr[m] = rng.normal(0.0, 1.0 / np.sqrt(cols), size=(rows, cols))
    return [to_device(a, xp, dtype) for a in host]
