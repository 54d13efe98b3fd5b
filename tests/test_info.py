"""fastcnn.info(): what fastcnn runs on, as plain values and as text."""

from __future__ import annotations

import json
import os
import re

import llvmlite
import numba
import numpy as np
import pytest

import fastcnn
from fastcnn._info import format_info, format_plan, parse_conv


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
    assert d["num_threads"] == fastcnn.get_num_threads()
    assert d["max_threads"] == len(os.sched_getaffinity(0))
    assert d["vector_bytes"] in (32, 64)
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


def test_format_info_shows_every_field():
    d = fastcnn.info()
    text = format_info(d)
    for value in (d["numpy"], d["numba"], d["vector_bytes"], d["cache_dir"], d["cpu"]):
        assert str(value) in text
    assert "(writable" in text
    assert text.splitlines()[0].startswith("fastcnn:")


def test_plan_of_named_convolutions():
    text = format_plan(parse_conv("64,1,28,28:32,3,3"))
    assert "output (64, 32, 26, 26)" in text
    assert [line.split()[:2] for line in text.splitlines()[1:]] == [
        ["forward", "few_taps"],
        ["grad_input", "few_taps"],
        ["grad_weight", "few_taps"],
    ]
    text = format_plan(parse_conv("8,16,32,32:32,1,1:stride=2:padding=0,0"))
    assert "stride (2, 2)" in text and "output (8, 32, 16, 16)" in text
    assert [line.split()[1] for line in text.splitlines()[1:]] == ["direct", "few_taps", "direct"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1,2,3:4,3,3", "input shape N,C,H,W must be 4 integers"),
        ("1,2,3,3:4,x,3", "weight shape K,KH,KW must be 3 integers"),
        ("1,2,3,3", "expected N,C,H,W:K,KH,KW"),
        ("1,2,5,5:4,3,3:groups=2", "unknown setting 'groups'"),
    ],
)
def test_parse_conv_names_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_conv(spec)


def test_plan_refuses_what_the_functional_api_refuses():
    with pytest.raises(ValueError, match="larger than the padded input"):
        format_plan(parse_conv("1,2,3,3:4,5,5"))


def test_format_info_without_a_cache():
    d = {**fastcnn.info(), "cache_dir": None, "cache_writable": False, "cache_note": "why"}
    assert re.search(r"kernel cache:\s+none, compiling in memory \(why\)", format_info(d))
