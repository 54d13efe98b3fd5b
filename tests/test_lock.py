"""fastcnn._lock: one training run per checkpoint folder, stale locks taken over."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from fastcnn._lock import LOCK_NAME, LockedError, lock_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_lock_holds_the_pid_and_is_removed_after(tmp_path):
    with lock_folder(tmp_path) as path:
        text = path.read_text()
        assert text.startswith(f"pid: {os.getpid()}\nhost: {socket.gethostname()}\nstarted: ")
        assert path == tmp_path / LOCK_NAME
    assert list(tmp_path.iterdir()) == []


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with lock_folder(tmp_path):
        with pytest.raises(LockedError) as info:
            with lock_folder(tmp_path):
                pytest.fail("two holders")
        assert info.value.pid == os.getpid()
        assert str(info.value).startswith(
            f"{tmp_path} is in use by another training run (pid {os.getpid()} on "
            f"{socket.gethostname()}, started "
        )
        assert str(info.value).endswith(
            f"its lock is {tmp_path / LOCK_NAME}); wait for it to finish, or use another "
            "checkpoint folder"
        )
        assert (tmp_path / LOCK_NAME).exists()  # the refused run removed nothing
    with lock_folder(tmp_path):  # free again
        pass


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(f"pid: {pid}\nhost: h\nstarted: 2026-01-01 00:00:00\n")
    lines = []
    with lock_folder(tmp_path, log=lines.append) as path:
        assert path.read_text().startswith(f"pid: {os.getpid()}\n")
    assert lines == [
        f"took over the stale lock {tmp_path / LOCK_NAME} of pid {pid} (no longer running; "
        "started 2026-01-01 00:00:00)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_lock_of_a_killed_holder_is_free(tmp_path):
    """A holder killed with SIGKILL cannot clean up; the kernel drops its flock."""
    script = (
        "import sys, time\nfrom fastcnn._lock import lock_folder\n"
        "with lock_folder(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(LockedError, match=f"pid {child.pid} on "):
            with lock_folder(tmp_path):
                pass
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    lines = []
    with lock_folder(tmp_path, log=lines.append):
        pass
    assert len(lines) == 1 and f"of pid {child.pid} (no longer running;" in lines[0]


def test_created_folder_is_removed_if_left_empty(tmp_path):
    folder = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError, match="boom"):
        with lock_folder(folder):
            assert folder.is_dir()
            raise RuntimeError("boom")
    assert not folder.exists() and (tmp_path / "a").is_dir()
    with lock_folder(folder):
        (folder / "keep.npz").write_text("")
    assert sorted(p.name for p in folder.iterdir()) == ["keep.npz"]
