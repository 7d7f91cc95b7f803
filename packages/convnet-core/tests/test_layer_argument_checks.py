"""Layer arguments that are refused with an error naming the layer: malformed
hyper-parameters, parameter and state trees, and inputs the parameters cannot take."""

from __future__ import annotations

import pytest
from convnet_core import layers as L

# ---------------------------------------------------------------------------------------
# combinators take layers


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Residual("conv"), "Residual body: 'conv' is not a layer"),
        (lambda: L.Residual([L.Conv2D(2)]), "Residual body: [Conv2D("),
        (lambda: L.Residual(L.Conv2D(2), "conv"), "Residual shortcut: 'conv' is not a layer"),
        (lambda: L.Residual(L.Conv2D), "Residual body: <class "),
    ],
)
def test_residual_refuses_what_is_not_a_layer(make, message):
    with pytest.raises(TypeError) as error:
        make()
    assert str(error.value).startswith(message)
    assert str(error.value).endswith(
        "is not a layer (one with output_shape, init, apply and "
        "grad, such as Conv2D(8) or Dense(10))"
    )


def test_residual_keeps_a_missing_shortcut_as_the_identity():
    assert L.Residual(L.Conv2D(2)).shortcut is None
