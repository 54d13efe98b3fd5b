"""Conv2d forward, input gradient and weight gradient on the named presets."""

import pytest
from conftest import params


@pytest.mark.parametrize(("case", "impl"), params("conv2d"))
def test_conv2d(run_case, case, impl):
    run_case(case, impl)
