"""Chunked versus naive full-vocabulary token statistics (entropy, perturbed entropy, JSD, KL).

The naive path is the obvious implementation (and the shape of the VEPO authors' pipeline): full
``(B, T, V)`` float32 log-softmax and probabilities for both passes, then element-wise sums. The chunked
path is ``visent.core.token_stats``. Each measurement runs in a fresh subprocess whose peak resident memory
(``VmHWM``, reset to the current RSS once the inputs are built) is compared with the resident memory at that
moment: the difference is the memory the computation needed beyond its inputs. glibc is told to mmap every
block above 64 KiB so that freed memory is returned and RSS follows live memory.

Usage:
    python benchmarks/token_stats.py                      # T = 1024 and 4096, V = 151,936
    python benchmarks/token_stats.py --T 1024 --reps 3

Prints one line per (T, path) and the ratios naive / chunked for time and extra memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, math, statistics, sys, time, torch
from visent.core.stats import token_stats
T, V, reps, path, chunk = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])

def naive(logits, logits_p, mask, temperature=1.0):
    lp = torch.log_softmax(logits.float() / temperature, -1)
    lq = torch.log_softmax(logits_p.float() / temperature, -1)
    p, q = lp.exp(), lq.exp()
    h, hq = -(p * lp).sum(-1), -(q * lq).sum(-1)
    log_m = torch.logaddexp(lp, lq) - math.log(2.0)
    jsd = (0.5 * (p * (lp - log_m)).sum(-1) + 0.5 * (q * (lq - log_m)).sum(-1)).clamp(min=0)
    kl = (p * (lp - lq)).sum(-1).clamp(min=0)
    m = mask.float()
    return h * m, hq * m, jsd * m, kl * m

g = torch.Generator().manual_seed(0)
logits = torch.randn(1, T, V, generator=g).mul_(3)
logits_p = torch.randn(1, T, V, generator=g).mul_(3)
logits_p.mul_(0.3).add_(logits, alpha=0.7)
mask = torch.ones(1, T)
# warm-up on a sliver (kernel and thread-pool start-up, not buffers)
token_stats(logits[:, :2], logits_p[:, :2], mask[:, :2], chunk_size=2); naive(logits[:, :2], logits_p[:, :2], mask[:, :2])
def kib(field='VmHWM'):
    return int(next(l for l in open('/proc/self/status') if l.startswith(field)).split()[1])
open('/proc/self/clear_refs', 'w').write('5')  # reset the peak to the current RSS
before = kib('VmRSS')
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    out = naive(logits, logits_p, mask) if path == "naive" else token_stats(logits, logits_p, mask, chunk_size=chunk)
    times.append(time.perf_counter() - t0)
    del out
print(json.dumps({"time_s": statistics.median(times), "extra_bytes": (kib() - before) * 1024}))
"""


def _child(T: int, V: int, reps: int, path: str, chunk: int, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(T), str(V), str(reps), path, str(chunk)],
        capture_output=True, text=True, env=env, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{path} T={T} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(T: int, V: int, reps: int, path: str, chunk: int) -> dict:
    """Time with the default allocator; memory in a second process with every big block mmap'd.

    The pinned mmap threshold makes RSS follow live memory, but it also turns every temporary into
    fresh page faults, which would distort the timing, so the two are measured separately.
    """
    timing = _child(T, V, reps, path, chunk, dict(os.environ))
    memory = _child(T, V, 1, path, chunk, dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    return {"time_s": timing["time_s"], "extra_bytes": memory["extra_bytes"]}


def main() -> None:
    from visent.core.stats import DEFAULT_CHUNK_SIZE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--V", type=int, default=151_936)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK_SIZE)
    args = ap.parse_args()
    import torch

    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32, V={args.V}, chunk={args.chunk}, median of {args.reps}")
    for T in args.T:
        naive = run(T, args.V, args.reps, "naive", args.chunk)
        chunked = run(T, args.V, args.reps, "chunked", args.chunk)
        inputs = 2 * T * args.V * 4
        for name, r in (("naive", naive), ("chunked", chunked)):
            print(f"T={T:5d} {name:8s} time {r['time_s']:7.2f} s   extra peak memory {r['extra_bytes'] / 2**20:9.1f} MiB"
                  f"   (inputs {inputs / 2**20:.0f} MiB)")
        mem_ratio = chunked["extra_bytes"] / max(naive["extra_bytes"], 1)
        print(f"T={T:5d} ratios: time naive/chunked = {naive['time_s'] / chunked['time_s']:.2f}x   "
              f"extra memory chunked/naive = {100 * mem_ratio:.1f}%")


if __name__ == "__main__":
    main()
