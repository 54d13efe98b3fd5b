"""Max-pool forward (with indices) and backward on the named presets."""

import pytest

from fastcnn.bench.presets import cases


@pytest.mark.parametrize("impl", ("fastcnn", "reference", "torch"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op == "max_pool2d"], ids=str)
def test_max_pool2d(run_case, case, impl):
    run_case(case, impl)
