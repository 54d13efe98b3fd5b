"""The losses and their input gradients, one call each, on the named presets."""

import pytest

from fastcnn.bench.presets import LOSSES, cases


@pytest.mark.parametrize("impl", ("fastcnn", "reference", "torch"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op in LOSSES], ids=str)
def test_loss(run_case, case, impl):
    run_case(case, impl)
