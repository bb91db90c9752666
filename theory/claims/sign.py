r"""Claims about sign symmetry, Kolen-Pollack and DRTP (:mod:`sim.rules_feedback`).

* ``kp.decay`` (Akrout et al. 2019): with weight decay :math:`\lambda` and step
  :math:`\eta`, both :math:`W` and the Kolen-Pollack feedback :math:`B` move by
  the same (transposed) update and decay by the same factor, so
  :math:`B_t - W_t^T = (1-\eta\lambda)^t (B_0 - W_0^T)` exactly, whatever the
  data, the activation and the teaching signals.
* ``sign.usf_alignment`` (Liao, Leibo & Poggio 2016; registered as found here):
  on Lillicrap et al.'s linear 30-20-10 task, from the same init, the hidden
  teaching signal of ``usf`` (:math:`\operatorname{sign}(W^T) e`) is closer to
  BP's than FA's (:math:`B e`) at every recorded step, on the ensemble mean.
  At the start the angle of :math:`\operatorname{sign}(w)` to a Gaussian
  :math:`w` is :math:`\arccos\sqrt{2/\pi} \approx 37^\circ` against FA's
  :math:`90^\circ`; FA then aligns, but in our runs stays above ``usf``.
  Single members can exceed FA's angle by a few degrees at some steps, so the
  claim is about the mean of an ensemble of 8.
* ``drtp.identity`` (Frenkel, Lefebvre & Bol 2021): with one-hot targets and a
  linear top layer, the hidden updates of DRTP are
  :math:`\Delta W_l = -\operatorname{mean}_b ((B_l y_b) \odot f'(a_{l,b}))\, h_{l-1,b}^T`
  (the paper's update with the sign of the error :math:`e = \hat y - y`, whose
  sign is that of :math:`-y`), and they do not depend on any layer above
  (update-unlocked): an identity check against the formula computed here.
"""

from __future__ import annotations

import contextlib

import numpy as np

from sim import stepper as sim_stepper
from sim import train as sim_train
from sim.data import lillicrap_linear
from sim.network import init_network
from sim.rules import compute_updates, draw_feedback
from sim.rules_feedback import kolen_pollack_step

from . import CheckResult, claim

EPS = float(np.finfo(np.float64).eps)


def _rng(seed: int, j: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, j]))


def _plot_violations(result: CheckResult, ax):
    values = np.asarray(result.details.get("violations", []), dtype=float)
    ax.semilogy(np.arange(1, values.size + 1), np.maximum(values, 1e-18), "o",
                label="violation of an instance (relative)")
    ax.axhline(max(result.tolerance, 1e-18), color="grey", ls="--", lw=0.8, label="tolerance")
    ax.set(xlabel="instance", ylabel="violation", title="violation per instance")
    ax.legend()


# --- Kolen-Pollack ---------------------------------------------------------------------------------

@contextlib.contextmanager
def kp_feedback_without_decay():
    """Sabotage: the trainer moves Kolen-Pollack's ``B`` by the transposed update but forgets its weight decay."""
    saved = sim_stepper.kolen_pollack_step  # the trainer's step (sim.stepper.Stepper) calls it

    def broken(feedback, weight_steps, decay, alive):
        return kolen_pollack_step(feedback, weight_steps, None, alive)

    sim_stepper.kolen_pollack_step = broken
    try:
        yield
    finally:
        sim_stepper.kolen_pollack_step = saved


KP_STEPS = 25


@claim("kp.decay", source="Akrout et al. 2019",
       statement="Kolen-Pollack: B_t - W_t^T = (1 - lr*wd)^t (B_0 - W_0^T) exactly, for every hidden layer",
       conditions="plain SGD (no momentum), weight decay wd on W and B, any data, activation and depth; "
                  "relative violation ||gap_t - (1-lr wd)^t gap_0|| / ||gap_0||",
       rules=("kp",), sabotage=kp_feedback_without_decay, instances=10, quick_instances=3, plot=_plot_violations)
def _kp_decay(seed: int, n_instances: int) -> CheckResult:
    violations = []
    for j in range(n_instances):
        rng = _rng(seed, j)
        depth = int(rng.integers(2, 4))
        sizes = [30, *[int(v) for v in rng.integers(4, 12, size=depth - 1)], 10]
        activation = str(rng.choice(["linear", "relu", "tanh"]))
        lr, decay = float(rng.uniform(0.002, 0.01)), float(rng.uniform(1.0, 4.0))
        data = lillicrap_linear(40, seed=int(rng.integers(2**31)))
        net = init_network(sizes, 2, seed=int(rng.integers(2**31)), activation=activation, scale=0.5)
        feedback = draw_feedback("kp", sizes, 2, seed=int(rng.integers(2**31)))
        gap0 = [b - np.swapaxes(w, 1, 2) for b, w in zip(feedback, net.weights[1:])]
        res = sim_train.train(net, data, rule="kp", steps=KP_STEPS, lr=lr, batch_size=10, feedback=feedback,
                              weight_decay=decay, progress=False, record_every=KP_STEPS, threads=1)
        factor = (1 - lr * decay) ** KP_STEPS
        worst = 0.0
        for b, w, g0 in zip(res.feedback, res.network.weights[1:], gap0):
            gap = b - np.swapaxes(w, 1, 2)
            worst = max(worst, float(np.linalg.norm(gap - factor * g0) / np.linalg.norm(g0)))
        violations.append(worst)
    # one rounding of B and W per step, relative to |B| ~ |B - W^T|
    return CheckResult(n_instances, max(violations), 64 * EPS * KP_STEPS, {"violations": violations})


# --- sign symmetry ---------------------------------------------------------------------------------

USF_STEPS, USF_RECORD, USF_MEMBERS = 800, 50, 8


def _plot_usf(result: CheckResult, ax):
    """Ensemble-mean angle of the hidden signal to BP's over the steps, usf against FA, every instance."""
    for j, curves in sorted(result.details.get("curves", {}).items()):
        steps = np.arange(len(curves["fa"])) * USF_RECORD
        ax.plot(steps, curves["fa"], color="C1", label="FA" if j == 0 else None)
        ax.plot(steps, curves["usf"], color="C0", label="usf (sign symmetry)" if j == 0 else None)
    ax.set(xlabel="step", ylabel="angle to BP's signal (degrees)", ylim=(0, 100),
           title="hidden signal vs BP, mean of 8 members")
    ax.legend()


@claim("sign.usf_alignment", source="Liao, Leibo & Poggio 2016; Moskovitz et al. 2018; found here",
       statement="On the linear 30-20-10 task, usf's hidden signal is closer to BP's than FA's at every "
                 "recorded step (ensemble mean of the angle, same init, same step size)",
       conditions="Lillicrap et al.'s linear task, one hidden layer of 20, init scale 0.5, lr 0.005, batch 20, "
                  "800 steps, 8 members; the violation is max over steps of mean angle(usf) - mean angle(FA), "
                  "degrees; single members can exceed FA by a few degrees",
       rules=("usf",), instances=3, quick_instances=1, hypothesis_examples=2, plot=_plot_usf)
def _usf_alignment(seed: int, n_instances: int) -> CheckResult:
    violations, curves = [], {}
    for j in range(n_instances):
        rng = _rng(seed, j)
        data = lillicrap_linear(200, seed=int(rng.integers(2**31)))
        init_seed, fb_seed = int(rng.integers(2**31)), int(rng.integers(2**31))
        angles = {}
        for rule in ("fa", "usf"):
            net = init_network([30, 20, 10], USF_MEMBERS, seed=init_seed, scale=0.5)
            res = sim_train.train(net, data, rule=rule, steps=USF_STEPS, lr=0.005, batch_size=20,
                                  feedback=draw_feedback(rule, net.sizes, USF_MEMBERS, seed=fb_seed),
                                  seed=init_seed, record_every=USF_RECORD, progress=False)
            angles[rule] = np.nanmean(res.metric("signal_angle")[:, :, 0], axis=1)
        curves[j] = angles
        violations.append(float(np.max(angles["usf"] - angles["fa"])))
    return CheckResult(n_instances, max(violations), 0.0, {"violations": violations, "curves": curves})


# --- DRTP ------------------------------------------------------------------------------------------

@claim("drtp.identity", source="Frenkel, Lefebvre & Bol 2021",
       statement="DRTP's hidden updates are -mean_b ((B_l y_b) * f'(a_l)) h_{l-1}^T and do not depend on the "
                 "layers above (update-unlocked); the output layer's is BP's",
       conditions="one-hot targets, linear top layer, softmax cross-entropy or mse, any hidden activation",
       rules=("drtp",), instances=20, quick_instances=5, plot=_plot_violations)
def _drtp_identity(seed: int, n_instances: int) -> CheckResult:
    violations = []
    for j in range(n_instances):
        rng = _rng(seed, j)
        depth = int(rng.integers(2, 5))
        sizes = [int(v) for v in rng.integers(2, 9, size=depth + 1)]
        n_members, batch = int(rng.integers(1, 4)), int(rng.integers(1, 7))
        activation = str(rng.choice(["linear", "relu", "tanh"]))
        loss = str(rng.choice(["mse", "ce"]))
        weights = [rng.normal(0, 1 / np.sqrt(a), size=(n_members, b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
        x = rng.normal(size=(batch, sizes[0]))
        y = np.eye(sizes[-1])[rng.integers(0, sizes[-1], size=batch)]
        feedback = draw_feedback("drtp", sizes, n_members, seed=int(rng.integers(2**31)))
        own = compute_updates("drtp", weights, x, y, activation=activation, loss=loss, feedback=feedback)
        # the paper's formula, layer by layer, from an independent forward pass
        h, expected = np.broadcast_to(x, (n_members, batch, sizes[0])), []
        for i, w in enumerate(weights[:-1]):
            a = np.einsum("ebj,eij->ebi", h, w)
            deriv = {"linear": np.ones_like(a), "relu": (a > 0) * 1.0, "tanh": 1 - np.tanh(a) ** 2}[activation]
            delta = -np.einsum("eik,bk->ebi", feedback[i], y) * deriv
            expected.append(np.einsum("ebi,ebj->eij", delta, h) / batch)
            h = {"linear": a, "relu": np.maximum(a, 0), "tanh": np.tanh(a)}[activation]
        # update-unlocked: other weights above layer 1 leave its update unchanged
        moved = compute_updates("drtp", [weights[0]] + [rng.normal(size=w.shape) for w in weights[1:]], x, y,
                                activation=activation, loss=loss, feedback=feedback)
        bp = compute_updates("bp", weights, x, y, activation=activation, loss=loss)
        scale = max(1e-300, *(float(np.max(np.abs(e))) for e in expected))
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(own[:-1], expected)) / scale
        worst = max(worst, float(np.max(np.abs(moved[0] - own[0]))) / scale,
                    float(np.max(np.abs(own[-1] - bp[-1]))) / max(1e-300, float(np.max(np.abs(bp[-1])))))
        violations.append(worst)
    return CheckResult(n_instances, max(violations), 1e3 * EPS, {"violations": violations})
