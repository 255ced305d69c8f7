"""Time and peak memory from ``visent train`` start to its first training step, by dataset size and path.

    python benchmarks/data_loading.py --sizes 2000 10000 40000 --eager-max 2000

For each N it writes (once, under ``--data-dir``, default /tmp/visent_bench_data; see
``benchmarks/data_files.py``) a geometry3k-layout parquet with embedded PNGs (~50 KB each) and the same
rows as a jsonl with image paths, then runs ``visent train --max_steps 1`` on the tiny Qwen2.5-VL:

- ``eager``: today's path before streaming: ``load_examples`` (every image decoded) + ``to_trl_dataset``
  (``Dataset.from_dict``, which re-encodes them), only for N <= ``--eager-max`` (it needs ~0.9 GiB per
  1,000 embedded rows);
- ``cold``: the streaming loader with an empty dataset cache (one pass, writes the Arrow cache);
- ``warm``: the same command again (served from the cache).

Each run is a fresh process; the table gives its wall time (process start to exit after one step of
a tiny model, so "to the first step" plus a fraction of a second), the loader's own time as it logs it,
and the process's peak RSS (``ru_maxrss`` of the run, read in a helper process whose only child it is).
The OS page cache is not dropped (that needs root): "cold" means no visent cache, not a cold disk. The load average at the start of each run is
printed too, because other work on the machine slows it down.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_files import write_jsonl, write_parquet

TRAIN_ARGS = ["--model_name_or_path", "tiny:qwen2_5_vl", "--reward_funcs", "math", "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--num_generations", "2", "--max_completion_length", "8",
              "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1"]

# The eager path as it was before streaming (commit eb6139b's trainer.sources.load_train_dataset).
EAGER = """
import sys
import visent.trainer.sources as sources
from visent.data.loaders import load_examples
from visent.data.synthetic import to_trl_dataset

def eager(spec, size=64, seed=0, label_noise=0.0):
    examples, report = load_examples(spec)
    return to_trl_dataset(examples)

sources.load_train_dataset = eager
from visent.trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""
STREAM = "import sys; from visent.trainer.cli import main; sys.exit(main(sys.argv[1:]))"


def run(code: str, dataset: Path, cache: Path, out: Path) -> dict:
    # This checkout's src first, so the benchmark measures the code it sits beside.
    src = str(HERE.parent / "src")
    env = {**os.environ, "VISENT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *TRAIN_ARGS, "--dataset", str(dataset),
                             "--output_dir", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = proc.communicate()[0]
    wall = time.perf_counter() - start
    # run() executes in a helper process whose only child is this one (run_isolated), so the children's
    # high-water mark is this run's peak RSS.
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    ok = proc.returncode == 0 and "train_runtime" in output
    m = re.search(r"examples \(\d+ rows skipped\) in ([\d.]+) s", output)
    loader_s = float(m.group(1)) if m else None
    if not ok:
        print(output[-3000:], file=sys.stderr)
    return {"ok": ok, "wall_s": wall, "peak_gb": peak_kb / 1024**2, "load_avg": load, "loader_s": loader_s}


def run_isolated(code: str, dataset: Path, cache: Path, out: Path) -> dict:
    """One run in a child of a fresh helper process, so RUSAGE_CHILDREN holds only that run's peak."""
    helper = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import data_loading as d; "
              "from pathlib import Path; "
              "print('RESULT', json.dumps(d.run(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))))")
    res = subprocess.run([sys.executable, "-c", helper, code, str(dataset), str(cache), str(out)],
                         capture_output=True, text=True, check=False)
    import json

    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(res.stdout[-2000:], res.stderr[-2000:], file=sys.stderr)
    return {"ok": False, "wall_s": float("nan"), "peak_gb": float("nan"), "load_avg": float("nan"), "loader_s": None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 40000])
    p.add_argument("--eager-max", type=int, default=2000, help="largest N to run the eager path on")
    p.add_argument("--layouts", nargs="+", default=["parquet", "jsonl"], choices=["parquet", "jsonl"])
    p.add_argument("--data-dir", default="/tmp/visent_bench_data")
    args = p.parse_args()
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        for layout in args.layouts:
            dataset = write_parquet(n, data_dir) if layout == "parquet" else write_jsonl(n, data_dir)
            work = Path(tempfile.mkdtemp(prefix=f"visent_bench_{layout}_{n}_"))
            results = {}
            if n <= args.eager_max:
                results["eager"] = run_isolated(EAGER, dataset, work / "eager_cache", work / "eager_out")
            results["cold"] = run_isolated(STREAM, dataset, work / "cache", work / "out_cold")
            results["warm"] = run_isolated(STREAM, dataset, work / "cache", work / "out_warm")
            shutil.rmtree(work, ignore_errors=True)
            for kind, r in results.items():
                rows.append((n, layout, kind, r))
                loader = f"{r['loader_s']:.1f}" if r["loader_s"] is not None else "-"
                print(f"N={n:>6} {layout:<7} {kind:<5} ok={r['ok']} wall {r['wall_s']:7.1f} s  loader {loader:>6} s  "
                      f"peak RSS {r['peak_gb']:5.2f} GiB  load avg {r['load_avg']:.2f}", flush=True)
            if "eager" in results and results["eager"]["ok"]:
                e, c, w = results["eager"], results["cold"], results["warm"]
                print(f"    eager/cold: time x{e['wall_s'] / c['wall_s']:.1f}, peak RSS x{e['peak_gb'] / c['peak_gb']:.1f}; "
                      f"eager/warm: time x{e['wall_s'] / w['wall_s']:.1f}", flush=True)
    print("\n| N | layout | path | wall to step 1 (s) | loader (s) | peak RSS (GiB) | load avg |")
    print("|---|---|---|---|---|---|---|")
    for n, layout, kind, r in rows:
        loader = f"{r['loader_s']:.1f}" if r["loader_s"] is not None else ("(cache)" if kind == "warm" else "-")
        status = "" if r["ok"] else " FAILED"
        print(f"| {n:,} | {layout} | {kind}{status} | {r['wall_s']:.1f} | {loader} | {r['peak_gb']:.2f} | {r['load_avg']:.2f} |")


if __name__ == "__main__":
    main()
