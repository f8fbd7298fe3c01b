"""ExecSync's output capture (containers.oci): the first bytes of each stream are kept, the
rest read and dropped; a deadline ends the read; the reply fits in one CRI message."""
from __future__ import annotations

import os
import threading
import time

from pycri.containers.oci import CapturedStream, capture_output, fit_reply


def _writer(fd: int, data: bytes, close: bool = True) -> threading.Thread:
    def run() -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if close:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_keeps_the_first_bytes_of_each_stream_and_drains_the_rest() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    writers = [_writer(out_w, b"a" * 300_000), _writer(err_w, b"b" * 10)]
    captures, finished = capture_output([out_r, err_r], time.monotonic() + 60, 100_000)
    for thread in writers:
        thread.join(60)
    os.close(out_r)
    os.close(err_r)
    assert finished
    assert captures[0].kept == b"a" * 100_000 and captures[0].dropped == 200_000 and captures[0].truncated
    assert captures[1].kept == b"b" * 10 and not captures[1].truncated


def test_a_deadline_ends_the_read() -> None:
    out_r, out_w = os.pipe()
    os.write(out_w, b"partial")
    captures, finished = capture_output([out_r], time.monotonic() + 0.2, 100)
    assert not finished and captures[0].kept == b"partial"
    os.close(out_r)
    os.close(out_w)


def test_the_reply_fits_its_budget() -> None:
    def stream(n: int) -> CapturedStream:
        return CapturedStream(bytearray(b"x" * n))

    out, err = stream(100), stream(100)
    fit_reply(out, err, 120)
    assert (len(out.kept), len(err.kept)) == (60, 60) and out.dropped == 40 and err.dropped == 40
    out, err = stream(100), stream(5)
    fit_reply(out, err, 50)
    assert (len(out.kept), len(err.kept)) == (45, 5)
    out, err = stream(5), stream(100)
    fit_reply(out, err, 50)
    assert (len(out.kept), len(err.kept)) == (5, 45)
    out, err = stream(10), stream(10)
    fit_reply(out, err, 50)
    assert (len(out.kept), len(err.kept)) == (10, 10) and not out.truncated


def test_a_timed_out_exec_is_killed_with_its_session(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from pycri.containers.oci import _kill_session, _session_members

    leader = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(_session_members(leader.pid)) < 3:  # sh and its two sleeps
            assert time.monotonic() < deadline
            time.sleep(0.01)
        members = _session_members(leader.pid)
        (tmp_path / "pid").write_text(str(leader.pid))
        killed = _kill_session(tmp_path / "pid")
        assert sorted(killed) == sorted(members)
        leader.wait(60)
        while _session_members(leader.pid):  # the sleeps are reaped by init or the test runner
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


def test_no_pid_file_kills_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pycri.containers.oci import _kill_session

    assert _kill_session(tmp_path / "absent") == []
    (tmp_path / "pid").write_text("1")
    assert _kill_session(tmp_path / "pid") == []


def test_what_an_exec_started_is_killed_without_a_session(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """runc does not make an exec'd process a session leader: its descendants go too."""
    import subprocess

    from pycri.containers.oci import _descendants, _kill_session

    leader = subprocess.Popen(["sh", "-c", "sleep 600 & sleep 600 & wait"])
    try:
        deadline = time.monotonic() + 60
        while len(_descendants([leader.pid])) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        tree = _descendants([leader.pid])
        (tmp_path / "pid").write_text(str(leader.pid))
        assert sorted(_kill_session(tmp_path / "pid")) == sorted(tree)
        leader.wait(60)
        while _descendants(tree):  # dead (zombies at most) once SIGKILL is delivered
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()
