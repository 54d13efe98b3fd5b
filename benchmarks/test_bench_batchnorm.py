"""Training-mode batchnorm, forward then backward, on the named presets."""

import pytest

from fastcnn.bench.presets import cases


@pytest.mark.parametrize("impl", ("fastcnn", "reference", "torch"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op == "batch_norm2d"], ids=str)
def test_batch_norm2d(run_case, case, impl):
    run_case(case, impl)
