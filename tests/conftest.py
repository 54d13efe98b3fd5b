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
