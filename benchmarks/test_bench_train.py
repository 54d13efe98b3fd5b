"""One SGD step (momentum 0.9, cross-entropy) of the MNIST net, fastcnn against torch."""

import pytest
from conftest import params


@pytest.mark.parametrize(("case", "impl"), params("train_step"))
def test_train_step(run_case, case, impl):
    run_case(case, impl)
