"""`checks.in_range`: None only in optional fields, and no magnitude float32 cannot hold."""

import attrs
import pytest
from convnet_core import checks, optim
from convnet_core.layers import Activation, BatchNorm2D, layer_from_config

BIG = "must be at most 3.403e+38 in magnitude (the largest float32), got"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: Activation("leaky_relu", alpha=None),
            "Activation alpha must be a number, got None",
        ),
        (lambda: Activation("leaky_relu", alpha=1e300), f"Activation alpha {BIG} 1e+300"),
        (lambda: Activation("leaky_relu", alpha=-4e38), f"Activation alpha {BIG} -4e+38"),
        (lambda: BatchNorm2D(eps=1e39), f"BatchNorm2D eps {BIG} 1e+39"),
        (lambda: optim.sgd(1e300), f"optimizer lr {BIG} 1e+300"),
        (lambda: optim.adamw(weight_decay=1e300), f"optimizer weight_decay {BIG} 1e+300"),
        (lambda: optim.sgd(0.1, clip_norm=1e39), f"optimizer clip_norm {BIG} 1e+39"),
    ],
)
def test_none_and_values_beyond_float32_are_refused_by_name(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_a_file_architecture_with_a_null_or_huge_alpha_is_refused():
    """What a model file's architecture holds goes through the same validators."""
    for alpha, problem in ((None, "must be a number, got None"), (1e300, f"{BIG} 1e+300")):
        config = {"class": "Activation", "config": {"name": "leaky_relu", "alpha": alpha}}
        with pytest.raises(ValueError) as info:
            layer_from_config(config)
        assert str(info.value).endswith(f"Activation alpha {problem}")


def test_only_optional_fields_take_none():
    assert optim.sgd(0.1, clip_norm=None).clip_norm is None  # made with optional=True
    assert Activation("leaky_relu", alpha=-3e38).alpha == -3e38  # within float32

    @attrs.frozen
    class Settings:
        given: float | None = attrs.field(
            default=1.0, validator=checks.in_range("S", optional=True)
        )
        required: float | None = attrs.field(default=None, validator=checks.in_range("S"))

    with pytest.raises(ValueError, match="^S required must be a number, got None$"):
        Settings()
    assert Settings(given=None, required=2.0) == Settings(None, 2.0)
