"""The hidden-state statistics stay within a fixed memory budget whatever T is (issue: chunked stats).

Peak resident memory is read in a fresh subprocess from ``/proc/self/status``: after a warm-up call and after
the inputs exist, the peak (``VmHWM``) is reset to the current RSS, so its growth is memory the call itself
needed. (``ru_maxrss`` would not do: Linux carries the parent's peak across fork and exec, so a child of a big
pytest process starts with a peak above anything it allocates.) glibc's dynamic mmap threshold would
let freed warm-up blocks be silently reused from the heap (hiding our buffers), so the subprocess pins it:
every block above 64 KiB is mmap'd and returned on free, and RSS follows live memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from visent.core.stats import token_stats_from_hidden
    torch.set_num_threads(1)
    T, V, D, chunk = int(sys.argv[1]), int(sys.argv[2]), 64, int(sys.argv[3])
    g = torch.Generator().manual_seed(0)
    w = torch.randn(V, D, generator=g) * 0.1
    h = torch.randn(1, T, D, generator=g)
    hp = h + 0.1 * torch.randn(1, T, D, generator=g)
    m = torch.ones(1, T)
    # Warm-up: BLAS allocates persistent workspaces on its first matmuls of each shape class; they are
    # not ours to count. Every warm-up tensor is freed again (mmap'd, see MALLOC_MMAP_THRESHOLD_).
    for n in (1, 2, 3, 4, 8, 16, 32, 64):
        torch.randn(n, D) @ w.T
    token_stats_from_hidden(h[:, :2], hp[:, :2], w, m[:, :2], chunk_size=2)
    def kib(field='VmHWM'):
        return int(next(l for l in open('/proc/self/status') if l.startswith(field)).split()[1])
    open('/proc/self/clear_refs', 'w').write('5')  # reset the peak to the current RSS
    before = kib('VmRSS')
    if sys.argv[4] == "naive":  # control: the obvious full-logits computation must blow the budget
        s = token_stats_from_hidden(h, hp, w, m, chunk_size=T)
    else:
        s = token_stats_from_hidden(h, hp, w, m, chunk_size=chunk)
    print(json.dumps({"extra_bytes": (kib() - before) * 1024, "finite": bool(torch.isfinite(s.jsd).all())}))
    """
)


def measure(T: int, V: int, chunk: int, mode: str = "chunked") -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(T), str(V), str(chunk), mode], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("T", [512, 8192])
def test_peak_extra_memory_is_bounded_by_chunk_not_T(T):
    V, chunk = 32_000, 64
    budget = 2 * chunk * V * 4  # 16 MB; all logits of one pass at T=8192 would be 1 GB
    r = measure(T, V, chunk)
    assert r["finite"]
    assert r["extra_bytes"] < budget, f"T={T}: {r['extra_bytes'] / 2**20:.1f} MiB >= budget {budget / 2**20:.1f} MiB"


def test_measurement_detects_an_unchunked_computation():
    V, chunk, T = 32_000, 64, 2048
    r = measure(T, V, chunk, mode="naive")
    assert r["extra_bytes"] > 2 * chunk * V * 4
