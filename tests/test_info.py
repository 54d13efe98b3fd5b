"""fastcnn.info(): what fastcnn runs on, as plain values and as text."""

from __future__ import annotations

import json
import os

import llvmlite
import numba
import numpy as np
import pytest

import fastcnn
from fastcnn._info import format_info


@pytest.fixture
def one_thread():
    before = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)
    yield
    fastcnn.set_num_threads(before)


def test_info_reports_versions_and_threads():
    d = fastcnn.info()
    assert d["fastcnn"] == fastcnn.__version__
    assert d["numpy"] == np.__version__
    assert d["numba"] == numba.__version__
    assert d["llvmlite"] == llvmlite.__version__
    assert d["threading_layer"] in {"omp", "tbb", "workqueue"}
    assert d["num_threads"] == fastcnn.get_num_threads()
    assert d["numba_max_threads"] == numba.config.NUMBA_NUM_THREADS
    json.dumps(d)  # plain values only


def test_info_reports_the_cpu_and_cache():
    d = fastcnn.info()
    assert d["cpu"] and d["cpu_target"]
    assert d["cpu_features"] == sorted(d["cpu_features"])
    if d["cpu_target"].startswith(("znver", "haswell", "skylake", "icelake")):
        assert "avx2" in d["cpu_features"]
    assert os.path.isabs(d["cache_dir"]) and d["cache_writable"] is True
    assert d["cache_source"] in {"NUMBA_CACHE_DIR", "FASTCNN_CACHE_DIR", "default"}


def test_info_follows_set_num_threads(one_thread):
    d = fastcnn.info()
    assert d["num_threads"] == 1
    assert all(lib["num_threads"] == 1 for lib in d["blas"])


def test_format_info_shows_every_field():
    d = fastcnn.info()
    text = format_info(d)
    for value in (d["numpy"], d["numba"], d["threading_layer"], d["cache_dir"], d["cpu"]):
        assert str(value) in text
    assert "(writable" in text
    assert text.splitlines()[0].startswith("fastcnn:")


def test_format_info_without_a_cache():
    d = {**fastcnn.info(), "cache_dir": None, "cache_writable": False, "cache_note": "why"}
    assert "kernel cache:    none, compiling in memory (why)" in format_info(d)
