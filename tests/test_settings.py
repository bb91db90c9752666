"""Bad input ends with a message, never a traceback and never a silent wrong result.

The settings of every experiment have declared types and ranges (:mod:`sim.settings`),
checked before any work; the Python API checks its own arguments; runs too large for
the memory are refused before they allocate; ``bbp verify`` runs a repeated claim once.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim.backend
from sim import cli
from sim.data.tasks import Dataset, lillicrap_linear
from sim.experiments import experiment, get_experiment, resolve_settings
from sim.network import init_network
from sim.settings import choice, integer, list_of, matrix, real, validate_setting, validate_settings
from sim.train import train


def _bbp(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- the validators ----------------------------------------------------------------------------

def test_the_message_names_the_setting_the_value_and_what_is_allowed():
    with pytest.raises(ValueError) as err:
        validate_setting("hidden", [64.7, 64], list_of(integer(1), max_len=8))
    assert str(err.value) == ("setting hidden=[64.7, 64]: element 0 must be an integer >= 1, got 64.7 "
                              "(allowed: a list of 1 to 8 integers >= 1)")


@pytest.mark.parametrize("value", [True, 2.0, 2.5, np.nan, "3", None, 0, [1]])
def test_integer_rejects_bools_floats_and_out_of_range(value):
    with pytest.raises(ValueError, match=r"must be an integer >= 1"):
        validate_setting("n", value, integer(1))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, True, 0.0, -1, "0.1"])
def test_real_rejects_non_finite_bools_and_out_of_range(value):
    with pytest.raises(ValueError, match=r"must be a finite number > 0"):
        validate_setting("lr", value, real(0, lo_open=True))


def test_validators_return_canonical_values():
    assert validate_setting("n", np.int64(3), integer(1)) == 3 and type(validate_setting("n", np.int64(3),
                                                                                        integer(1))) is int
    assert validate_setting("lr", 1, real(0, lo_open=True)) == 1.0
    assert validate_setting("lrs", (0.1, 0.2), list_of(real(0, lo_open=True))) == [0.1, 0.2]
    assert validate_setting("a", "tanh", choice("relu", "tanh")) == "tanh"
    assert validate_setting("t", [[1, 2], [3, 4]], matrix(real())) == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("value,match", [
    ([], "must have 1 to 3 elements, got 0"),
    (["bp", "bp"], "must not repeat an element"),
    (["bp", "xx"], "element 1 must be one of bp, fa, dfa, got 'xx'"),
    ("bp", "must be a list"),
])
def test_list_of_choices(value, match):
    with pytest.raises(ValueError, match=match):
        validate_setting("rules", value, list_of(choice("bp", "fa", "dfa"), max_len=3, distinct=True))


def test_matrix_must_be_rectangular_and_finite():
    with pytest.raises(ValueError, match="rows of one length"):
        validate_setting("teacher", [[1.0, 2.0], [3.0]], matrix(real()))
    with pytest.raises(ValueError, match=r"element \[1\]\[0\] must be a finite number, got nan"):
        validate_setting("teacher", [[1.0], [np.nan]], matrix(real()))


def test_min_distinct():
    with pytest.raises(ValueError, match="at least 2 different values"):
        validate_setting("lrs", [0.1, 0.1], list_of(real(0, lo_open=True), min_len=2, min_distinct=2))


# --- the experiments' schemas ----------------------------------------------------------------------

def test_every_setting_of_every_experiment_is_declared_and_its_defaults_validate():
    registry = cli._experiments()
    assert len(registry) >= 13
    for exp in registry.values():
        assert set(exp.schema) == set(exp.defaults), exp.name
        validate_settings(dict(exp.defaults), exp.schema, exp.checks)
        validate_settings({**exp.defaults, **exp.quick}, exp.schema, exp.checks)


def test_registration_needs_a_validator_per_setting_and_valid_defaults():
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        experiment("test-undeclared", title="", description="", defaults={"a": 1, "b": 2}, schema={"a": integer()})
    with pytest.raises(ValueError, match="setting a=0"):
        experiment("test-bad-default", title="", description="", defaults={"a": 0}, schema={"a": integer(1)})
    with pytest.raises(ValueError, match="setting a=0"):
        experiment("test-bad-quick", title="", description="", defaults={"a": 1}, quick={"a": 0},
                   schema={"a": integer(1)})


def test_python_api_overrides_are_validated_too():
    exp = get_experiment("dfa-nonlinear")
    with pytest.raises(ValueError, match=r"setting hidden=\[64\.7, 64\]: element 0 must be an integer"):
        resolve_settings(exp, overrides={"hidden": [64.7, 64]})
    with pytest.raises(ValueError, match="setting lr=True"):
        resolve_settings(exp, overrides={"lr": True})
    assert resolve_settings(exp, overrides={"hidden": (8, 8), "lr": 1})["hidden"] == [8, 8]


# the failures observed on main, each through the command line: exit 2, a message, no traceback
CLI_CASES = [
    ("dfa-nonlinear", "hidden=[64.7, 64]", "setting hidden=[64.7, 64]: element 0 must be an integer >= 1, got 64.7"),
    ("dfa-nonlinear", "hidden=[[64]]", "element 0 must be an integer >= 1, got [64]"),
    ("dfa-nonlinear", "hidden=[]", "setting hidden=[]: must have 1 to 8 elements, got 0"),
    ("dfa-nonlinear", "hidden=[64,NaN]", "element 1 must be an integer >= 1, got nan"),
    ("fa-conservation", "lrs=[]", "setting lrs=[]: must have 2 to 32 elements"),
    ("fa-conservation", "lrs=[0, 0.01]", "element 0 must be a finite number > 0, got 0"),
    ("fa-conservation", "lrs=[0.01]", "must have 2 to 32 elements, got 1"),
    ("fa-conservation", "lrs=[0.01, 0.01]", "at least 2 different values"),
    ("sg-linear", "singular_values=[NaN,1]", "element 0 must be a finite number > 0, got nan"),
    ("sg-linear", "singular_values=[1,1,1,1,1,1,1,1,1]", "more than min(n_inputs, n_outputs) = 8"),
    ("fa-linear", "rules=[]", "setting rules=[]: must have 1 to 3 elements, got 0"),
    ("fa-linear", "rules=[\"bp\", \"sg\"]", "element 1 must be one of bp, fa, dfa, got 'sg'"),
    ("layer-parallel", "rules=[\"dni\"]", "got 'dni' (allowed: a list of 1 to 8 names from bp, dfa, greedy, dgl, "
                                          "async-dgl, overlap, sg, cdni"),
    ("layer-parallel", "mlp_layers_per_block=[1, 1]", "not to the 4 layers"),
    ("sg-dynamics", "teacher=[[1.0, 2.0]]", "is 1 x 2, not n_out x n_in = 2 x 2"),
    ("sg-nonlinear", "activation=sigmoid", "must be one of linear, relu, tanh, got 'sigmoid'"),
    ("dfa-alignment", "widths=[16, 0]", "element 1 must be an integer >= 1, got 0"),
    ("saxe-modes", "u0=2.0", "setting u0=2.0: is not below half the smallest singular value"),
    ("scalar-chain", "c=0", "setting c=0.0: must be a finite number != 0"),
    ("hier-digits-samples", "index=1000", "is not below the 200 digits drawn"),
    ("hier-layerwise", "methods=[\"layerwise\", \"xx\"]", "element 1 must be one of layerwise, end-to-end, greedy"),
    ("sg-regression", "input_scales=[1.0]", "must have 2 elements, got 1"),
    ("fa-linear", "steps=inf", "is not a valid int"),
]


@pytest.mark.parametrize("name,setting,message", CLI_CASES, ids=[f"{n}:{s}" for n, s, _ in CLI_CASES])
def test_bad_settings_end_with_a_message_and_exit_status_2(capsys, tmp_path, name, setting, message):
    code, _, err = _bbp(capsys, "run", name, "--out", str(tmp_path / "run"), "--set", setting)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert "(allowed: " in err or "not a valid" in err


def test_the_sg_rule_has_one_name_in_layer_parallel():
    exp = get_experiment("layer-parallel")
    assert "sg" in exp.defaults["rules"] and "dni" not in exp.defaults["rules"]
    assert resolve_settings(exp, overrides={"rules": '["sg", "cdni"]'})["rules"] == ["sg", "cdni"]


# --- memory ----------------------------------------------------------------------------------------

def test_available_memory_is_read_from_the_system():
    available = sim.backend.available_memory()
    assert available is None or available > 0


@pytest.mark.parametrize("argv,what", [
    (["fa-linear", "--seeds", "10000000"], "an ensemble of 10000000 networks"),
    (["dfa-nonlinear", "--set", "hidden=[100000,100000]"], "an ensemble of 4 networks of sizes [20, 100000, 100000, 5]"),
])
def test_runs_too_large_for_the_memory_are_refused_before_they_allocate(capsys, tmp_path, monkeypatch, argv, what):
    monkeypatch.setattr(sim.backend, "available_memory", lambda: 8 * 2**30)
    code, _, err = _bbp(capsys, "run", *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and "Traceback" not in err
    assert what in err and "GiB of memory, but only 8 GiB is available" in err


def test_check_memory():
    sim.backend.check_memory(1, "one byte")
    with pytest.raises(ValueError, match="a test needs about 1.07e\\+09 GiB"):
        sim.backend.check_memory(2**60, "a test")


def test_datasets_too_large_for_the_memory_are_refused(monkeypatch):
    monkeypatch.setattr(sim.backend, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match="Lillicrap task with 100000 samples needs about"):
        lillicrap_linear(100000)


# --- the Python API ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lr", ["0.1", b"0.1", True, [True, False], ["0.1", "0.1"]])
def test_train_rejects_a_learning_rate_that_is_not_a_number(lr):
    net, data = init_network([30, 4, 10], 2, seed=0), lillicrap_linear(20)
    with pytest.raises(ValueError, match="lr must be a non-negative finite number"):
        train(net, data, rule="bp", steps=1, lr=lr)


# --- bbp verify -------------------------------------------------------------------------------------

def test_a_repeated_claim_runs_once(capsys, tmp_path):
    from theory.claims import get_claims, verify

    assert [c.id for c in get_claims(["fa.moves_from_zero", "lillicrap.alignment", "fa.moves_from_zero"])] == \
        ["fa.moves_from_zero", "lillicrap.alignment"]
    assert len(verify(["fa.moves_from_zero", "fa.moves_from_zero"], quick=True)) == 1
    code, out, _ = _bbp(capsys, "verify", "--quick", "--claim", "fa.moves_from_zero", "--claim", "fa.moves_from_zero")
    assert code == 0 and out.count("fa.moves_from_zero") == 1 and "1 of 1 claims pass" in out


def test_dataset_is_checked():
    with pytest.raises(ValueError, match="unknown dataset kind"):
        Dataset(np.zeros((2, 1)), np.zeros((2, 1)), "regresion")
