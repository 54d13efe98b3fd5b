"""Linear (x @ weight.T + bias) on the named presets."""

import pytest

from fastcnn.bench.presets import cases


@pytest.mark.parametrize("impl", ("fastcnn", "reference", "torch"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op == "linear"], ids=str)
def test_linear(run_case, case, impl):
    run_case(case, impl)
