"""Fixtures shared by the test modules (shared data and helpers live in cases.py)."""

import pytest
from cases import THREADS

import fastcnn


@pytest.fixture(params=THREADS)
def threads(request):
    """Run the test with fastcnn on the given number of threads, then restore."""
    before = fastcnn.get_num_threads()
    fastcnn.set_num_threads(request.param)
    yield request.param
    fastcnn.set_num_threads(before)


def pytest_xdist_make_scheduler(config, log):
    """``pytest -n N``: work stealing instead of xdist's default load balancing, so that
    the suite's few long subprocess tests do not end the run on one busy worker while the
    other idles. An explicit ``--dist`` other than ``load`` is kept."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)
