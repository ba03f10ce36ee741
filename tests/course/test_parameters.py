"""Parameter validation: each bad value gives an error naming the parameter, the value and what is allowed."""
import pytest

from kdtutorial.course.parameters import Choice, Float, Int, ListOf, ParameterError, check_parameters

PROFILES = {
    "quick": dict(N_SEEDS=3, EPOCHS=5, DATASET="digits"),
    "full": dict(N_SEEDS=5, EPOCHS=30, DATASET="fashion-mnist"),
}
RULES = dict(EPOCHS=Int(1, 500), DATASET=Choice("digits", "fashion-mnist"), TEMPERATURE=Float(0, 100, low_open=True),
             ALPHA=Float(0, 1), GRID_T=ListOf(Float(0, None, low_open=True)))


def given(**overrides):
    base = dict(PROFILE="quick", SEED=0, N_SEEDS=None, DEVICE="auto", EPOCHS=None, DATASET=None,
                TEMPERATURE=4.0, ALPHA=0.9, GRID_T=[1, 4])
    base.update(overrides)
    return base


def test_profile_fills_none_and_explicit_wins():
    p = check_parameters(given(), RULES, PROFILES)
    assert (p.N_SEEDS, p.EPOCHS, p.DATASET) == (3, 5, "digits")
    p = check_parameters(given(PROFILE="full", EPOCHS=7), RULES, PROFILES)
    assert (p.N_SEEDS, p.EPOCHS, p.DATASET) == (5, 7, "fashion-mnist")
    assert p.TEMPERATURE == 4.0 and p.GRID_T == [1.0, 4.0]


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("PROFILE", "fast", "PROFILE = 'fast' is not allowed: expected one of 'quick', 'full'"),
        ("DEVICE", "gpu", "DEVICE = 'gpu' is not allowed: expected one of 'auto', 'cpu', 'cuda'"),
        ("SEED", -1, "SEED = -1 is not allowed: expected an integer from 0 to"),
        ("SEED", 1.5, "SEED = 1.5 is not allowed: expected an integer"),
        ("N_SEEDS", 0, "N_SEEDS = 0 is not allowed: expected an integer from 1 to 50"),
        ("N_SEEDS", True, "N_SEEDS = True is not allowed"),
        ("EPOCHS", "10", "EPOCHS = '10' is not allowed: expected an integer from 1 to 500"),
        ("DATASET", "cifar10", "DATASET = 'cifar10' is not allowed: expected one of 'digits', 'fashion-mnist'"),
        ("TEMPERATURE", 0, "TEMPERATURE = 0 is not allowed: expected a number > 0 and <= 100"),
        ("TEMPERATURE", -2.0, "TEMPERATURE = -2.0 is not allowed"),
        ("ALPHA", 1.2, "ALPHA = 1.2 is not allowed: expected a number >= 0 and <= 1"),
        ("GRID_T", [], "GRID_T = [] is not allowed: expected a non-empty list"),
        ("GRID_T", [1, -1], "GRID_T[1] = -1 is not allowed: expected a number > 0"),
    ],
)
def test_bad_values_name_parameter_and_allowed(name, value, message):
    with pytest.raises(ParameterError) as err:
        check_parameters(given(**{name: value}), RULES, PROFILES)
    assert message in str(err.value)


def test_unknown_parameter_and_missing_profile_value():
    with pytest.raises(ParameterError, match="no rule for parameter"):
        check_parameters(given(BOGUS=1), RULES, PROFILES)
    with pytest.raises(ParameterError, match="EPOCHS is None and profile 'quick' does not set it"):
        check_parameters(given(), RULES, {"quick": dict(N_SEEDS=3, DATASET="digits"), "full": {}})


def test_parameter_error_is_a_value_error():
    assert issubclass(ParameterError, ValueError)


def test_a_list_that_may_be_empty_takes_none_and_still_checks_its_items():
    rule = ListOf(Int(1, 10), empty=True)
    assert rule.check("TOP_K_SWEEP", []) == []
    assert rule.check("TOP_K_SWEEP", [3]) == [3]
    with pytest.raises(ParameterError, match=r"TOP_K_SWEEP\[0\] = 0 is not allowed"):
        rule.check("TOP_K_SWEEP", [0])
    with pytest.raises(ParameterError, match="expected a list"):
        rule.check("TOP_K_SWEEP", "[1]")
    with pytest.raises(ParameterError, match="a non-empty list"):
        ListOf(Int(1, 10)).check("GRID", [])
