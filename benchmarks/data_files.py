"""Synthetic dataset files for ``benchmarks/data_loading.py`` (kept out of git; written under /tmp).

Two layouts of the same N rows:

- ``geometry3k_N.parquet``: hiyouga/geometry3k's layout, ``images`` = ``[{"bytes", "path"}]`` embedded
  PNGs, ``problem`` = ``"<image>..."``, ``answer``; ~45 KB per image, as in the real set
  (8,000 rows = 378 MB there).
- ``paths_N/data.jsonl`` + ``paths_N/images/*.png``: the same rows with image file paths (mmk12 layout).

Images come from a pool of distinct line drawings with noise (so PNG cannot compress them to nothing);
each row gets one pool image and a unique question, which is all a loader's cost depends on.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

POOL = 128


def _pool(n: int = POOL, seed: int = 0) -> list[bytes]:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for i in range(n):
        w, h = rng.randint(280, 360), rng.randint(200, 260)
        noise = Image.effect_noise((w, h), 6).point(lambda v: 255 - abs(v - 128) // 2)
        im = Image.merge("RGB", (noise, noise, noise))
        draw = ImageDraw.Draw(im)
        for _ in range(8):
            pts = [(rng.randint(0, w), rng.randint(0, h)) for _ in range(2)]
            draw.line(pts, fill=(0, 0, 0), width=2)
        draw.text((10, 10), f"fig {i}", fill=(0, 0, 0))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _rows(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        a, b = rng.randint(1, 90), rng.randint(1, 90)
        yield i, f"<image>In the figure, angle {i % 7 + 1} is {a} and angle {i % 5 + 2} is {b}. Find x (row {i}).", str(a + b)


def write_parquet(n: int, out_dir: Path) -> Path:
    """``geometry3k_N.parquet`` with embedded images (HF Image-feature struct), written in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out_dir / f"geometry3k_{n}.parquet"
    if path.exists():
        return path
    pool = _pool()
    image_type = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    schema = pa.schema([("images", image_type), ("problem", pa.string()), ("answer", pa.string())])
    tmp = path.with_suffix(".tmp")
    # No dictionary encoding: it would store the pool's few distinct images once, which a real set
    # (every image distinct) cannot do.
    with pq.ParquetWriter(tmp, schema, use_dictionary=False) as writer:
        batch: list[tuple] = []
        for i, problem, answer in _rows(n):
            batch.append(([{"bytes": pool[i % POOL], "path": f"{i}.png"}], problem, answer))
            if len(batch) == 500:
                writer.write_table(pa.table(list(map(list, zip(*batch))), schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.table(list(map(list, zip(*batch))), schema=schema))
    tmp.rename(path)
    return path


def write_jsonl(n: int, out_dir: Path) -> Path:
    """``paths_N/data.jsonl`` (``id, question, answer, image_path``: the mmk12 layout) + one PNG per row."""
    folder = out_dir / f"paths_{n}"
    path = folder / "data.jsonl"
    if path.exists():
        return path
    (folder / "images").mkdir(parents=True, exist_ok=True)
    pool = _pool()
    with open(folder / "data.tmp", "w", encoding="utf-8") as fh:
        for i, problem, answer in _rows(n):
            img = folder / "images" / f"{i}.png"
            if not img.exists():
                img.write_bytes(pool[i % POOL])
            fh.write(json.dumps({"id": f"r{i}", "question": problem, "answer": answer,
                                 "image_path": f"images/{i}.png"}) + "\n")
    (folder / "data.tmp").rename(path)
    return path


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/visent_bench_data")
    out.mkdir(parents=True, exist_ok=True)
    n = int(sys.argv[1])
    print(write_parquet(n, out), write_jsonl(n, out))
