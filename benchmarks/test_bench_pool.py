"""Max-pool forward (with indices) and backward on the named presets."""

import pytest
from conftest import params


@pytest.mark.parametrize(("case", "impl"), params("max_pool2d"))
def test_max_pool2d(run_case, case, impl):
    run_case(case, impl)
