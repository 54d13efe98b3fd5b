"""One SGD step (momentum 0.9, cross-entropy) of the MNIST net, fastcnn against torch."""

import pytest

from fastcnn.bench.presets import cases


@pytest.mark.parametrize("impl", ("fastcnn", "torch"))
@pytest.mark.parametrize("case", [c for c in cases() if c.op == "train_step"], ids=str)
def test_train_step(run_case, case, impl):
    run_case(case, impl)
