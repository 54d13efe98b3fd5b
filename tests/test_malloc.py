"""fastcnn.keep_freed_memory: glibc's malloc keeps freed blocks for the next allocation."""

import os
import subprocess
import sys

import pytest

import fastcnn
from fastcnn import _malloc, cli

glibc = pytest.mark.skipif(not _malloc._is_glibc(), reason="needs glibc")

# Three 8 MiB arrays filled and freed per round: with glibc's defaults the freed top of the
# heap goes back to the system, so later rounds fault their pages in again.
ROUNDS = """
import resource, sys
import numpy as np
import fastcnn
if sys.argv[1] == "keep":
    assert fastcnn.keep_freed_memory()

def round_():
    arrays = [np.empty(8 << 20, np.uint8) for _ in range(3)]
    for a in arrays:
        a.fill(1)

round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@glibc
def test_freed_memory_is_reused_without_page_faults():
    pages_per_round = 3 * (8 << 20) // 4096
    assert _faults("default") > pages_per_round  # the premise: glibc gives pages back
    assert _faults("keep") < pages_per_round // 10


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(os, "confstr", lambda name: None)  # as on musl
    assert fastcnn.keep_freed_memory() is False


class _Stop(Exception):
    pass


def test_the_train_command_keeps_freed_memory(monkeypatch, tmp_path):
    calls = []

    def keep():
        calls.append(True)
        raise _Stop  # the rest of the run is not what this test is about

    monkeypatch.setattr(_malloc, "keep_freed_memory", keep)
    with pytest.raises(_Stop):
        cli.main(["train", "--no-checkpoint", "--epochs", "1"])
    assert calls == [True]
