"""visent.lab.pool: a run folder used by one process at a time, and workers that end with their parent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from visent.lab.pool import RunDirBusy, exclusive_dir


def test_a_second_user_of_a_run_folder_is_refused_and_the_lock_is_released(tmp_path):
    run = tmp_path / "runs" / "grpo" / "seed-0"
    with exclusive_dir(str(run)):
        assert run.is_dir()
        with pytest.raises(RunDirBusy, match="in use by another process"), exclusive_dir(str(run)):
            pass
    with exclusive_dir(str(run)):  # released at the end of the block
        pass


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        from visent.lab.pool import exclusive_dir
        with exclusive_dir({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(30)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy), exclusive_dir(str(tmp_path)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive_dir(str(tmp_path)):  # a killed holder leaves no stale lock
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_ends_when_its_parent_is_killed():
    # parent: starts a child that calls exit_with_parent and sleeps, prints its pid, then dies abruptly
    code = textwrap.dedent(
        """
        import os, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c",
            "import time; from visent.lab.pool import exit_with_parent; exit_with_parent(0.1); time.sleep(60)"])
        print(child.pid, flush=True)
        import time; time.sleep(2)  # let the child start its watch
        os._exit(0)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(pid)
    if alive:
        os.kill(pid, 9)
    assert not alive, "the orphaned worker kept running"
