"""Conv2d forward, input gradient and weight gradient on the named presets."""

import pytest

from fastcnn.bench.presets import cases


@pytest.mark.parametrize("impl", ("fastcnn", "reference", "torch", "tutorial"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op == "conv2d"], ids=str)
def test_conv2d(run_case, case, impl):
    run_case(case, impl)
