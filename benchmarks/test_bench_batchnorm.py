"""Training-mode batchnorm, forward then backward, on the named presets."""

import pytest
from conftest import params


@pytest.mark.parametrize(("case", "impl"), params("batch_norm2d"))
def test_batch_norm2d(run_case, case, impl):
    run_case(case, impl)
