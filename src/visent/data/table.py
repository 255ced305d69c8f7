"""Streaming load into a memory-mapped, cached Arrow table: datasets of any size in flat memory.

    table = load_table("geometry3k_train.parquet")        # one pass, or a cache hit
    print(table.report.summary(), table.cache_dir)
    train = table.trl_dataset()                            # TRL's conversational image format
    noisy, noise_report = table.with_label_noise(0.3, seed=0)
    ex = table[0]                                          # an Example; images still undecoded

:func:`load_table` reads the rows once with the same parsers as the eager
:func:`visent.data.loaders.load_examples` (so it gives the same examples, skips the same rows for the same
reasons, and ``strict=True`` still names file, row and field), writes each example to an Arrow file as it
comes and keeps nothing per row but its id. Embedded images stay the bytes they were (checked from their
header by default, ``image_check="decode"`` decodes each once and drops the pixels); image files stay
paths. The file is memory-mapped afterwards and cached under a key of source and options
(:mod:`visent.data.cache`), so a second load of an unchanged source opens it in well under a second.

The Arrow columns are those of TRL's conversational image format (what
:func:`visent.data.synthetic.to_trl_dataset` builds for the lab's in-memory examples): ``prompt``
(``[{"role": "user", "content": text}]``), ``images`` (``{bytes, path}`` structs, in prompt order),
``answer``, ``clean_answer``, ``is_noisy``, ``task``, ``id``, ``meta`` (JSON text).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from visent.data import cache
from visent.data.errors import CORRUPT_IMAGE, DataError, LoadReport
from visent.data.images import EmbeddedImage, to_struct
from visent.data.loaders import iter_examples, make_options, open_source, warn_skipped
from visent.data.schema import Example

logger = logging.getLogger(__name__)

COLUMNS = ("prompt", "images", "answer", "clean_answer", "is_noisy", "task", "id", "meta")
WRITE_BATCH = 128  # rows per Arrow record batch: ~6 MB of embedded images at geometry3k's ~47 KB each


def features() -> Any:
    """The ``datasets.Features`` of the table (images undecoded: :class:`DecodeImages` opens them)."""
    from datasets import Features, Image, List, Value

    return Features({
        "prompt": List({"role": Value("string"), "content": Value("string")}),
        "images": List(Image(decode=False)),
        "answer": Value("string"),
        "clean_answer": Value("string"),
        "is_noisy": Value("bool"),
        "task": Value("string"),
        "id": Value("string"),
        "meta": Value("string"),
    })


def meta_json(meta: dict[str, Any]) -> str:
    # default=str: a Hub row can carry values JSON cannot hold (dates, numpy scalars); the eager
    # to_trl_dataset would fail on them, the table keeps their text.
    return json.dumps(meta, ensure_ascii=False, default=str)


def record(ex: Example) -> dict[str, Any]:
    """One table row for an example."""
    return {"prompt": [{"role": "user", "content": ex.prompt}], "images": [to_struct(im) for im in ex.images],
            "answer": ex.answer, "clean_answer": ex.clean_answer, "is_noisy": bool(ex.is_noisy), "task": ex.task,
            "id": ex.id, "meta": meta_json(ex.meta)}


# ------------------------------------------------------------------------------------------ the table


class DecodeImages:
    """``datasets`` transform: each row's ``images`` structs become RGB PIL images, per batch.

    A file that no longer opens (or bytes that do not decode: only headers are checked at load time by
    default) fails naming the row's source file and row, not deep inside PIL.
    """

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        from visent.data.images import open_image

        if "images" not in batch:
            return batch
        metas = batch.get("meta")
        out = []
        for i, refs in enumerate(batch["images"]):
            row = []
            for k, ref in enumerate(refs or []):
                try:
                    row.append(open_image(ref if ref.get("bytes") else ref.get("path")))
                except Exception as exc:  # noqa: BLE001 - PIL raises many types for a bad file
                    where = ""
                    if metas is not None:
                        m = json.loads(metas[i])
                        where = f"{m.get('source_file', '?')} row {m.get('source_row', '?')}, "
                    raise DataError(f"{where}field 'images' (image {k}): cannot decode image "
                                    f"{ref.get('path') or '<embedded bytes>'}: {type(exc).__name__}: {exc}; "
                                    f"load with image_check='decode' (--image-check decode) to skip such rows",
                                    reason=CORRUPT_IMAGE) from None
            out.append(row)
        return {**batch, "images": out}


class ExampleTable(Sequence):
    """A loaded dataset: a memory-mapped ``datasets.Dataset`` plus its load report and cache folder.

    Indexing and iteration give :class:`Example` objects whose images are paths or
    :class:`~visent.data.images.EmbeddedImage` handles (bytes read only when opened); the text columns
    are read once into lists (small per-row metadata), the image bytes never.

    Attributes:
        dataset: the Arrow-backed ``datasets.Dataset`` (columns ``COLUMNS``; images undecoded).
        report: the :class:`LoadReport` of the pass that built the cache.
        cache_dir: the cache folder (None for a table not backed by one).
        hit: whether the load was served from the cache.
    """

    def __init__(self, dataset: Any, report: LoadReport, cache_dir: Path | None = None, hit: bool = False,
                 task: str | None = None) -> None:
        self.dataset, self.report, self.cache_dir, self.hit = dataset, report, cache_dir, hit
        self._task = task
        self._cols: dict[str, list] | None = None

    def _columns(self) -> dict[str, list]:
        if self._cols is None:
            import pyarrow.compute as pc

            table = self.dataset.data
            cols = {name: table.column(name).to_pylist()
                    for name in ("id", "task", "answer", "clean_answer", "is_noisy", "meta")}
            cols["prompt"] = pc.struct_field(pc.list_element(table.column("prompt"), 0), "content").to_pylist()
            images = table.column("images")
            lengths = pc.list_value_length(images).to_pylist()
            flat = pc.list_flatten(images)
            paths = pc.struct_field(flat, "path").to_pylist()
            embedded = pc.is_valid(pc.struct_field(flat, "bytes")).to_pylist()
            refs, pos = [], 0
            for n in lengths:
                n = n or 0
                refs.append([(paths[pos + k], embedded[pos + k]) for k in range(n)])
                pos += n
            cols["images"] = refs
            self._image_column = images
            self._cols = cols
        return self._cols

    def __len__(self) -> int:
        return len(self.dataset)

    def _example(self, i: int) -> Example:
        c = self._columns()
        images = [EmbeddedImage(self._image_column, i, k, path) if embedded else path
                  for k, (path, embedded) in enumerate(c["images"][i])]
        return Example(id=c["id"][i], task=self._task or c["task"][i], prompt=c["prompt"][i], images=images,
                       answer=c["answer"][i], clean_answer=c["clean_answer"][i], is_noisy=bool(c["is_noisy"][i]),
                       meta=json.loads(c["meta"][i]))

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._example(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"row {index} of a {n}-row table")
        return self._example(index % n)

    def __iter__(self) -> Iterator[Example]:
        for i in range(len(self)):
            yield self._example(i)

    def with_task(self, task: str) -> ExampleTable:
        """The same rows scored as ``task`` (``visent eval --task``)."""
        return ExampleTable(self.dataset, self.report, self.cache_dir, self.hit, task)

    def with_label_noise(self, rate: float, seed: int, **kwargs: Any) -> tuple[ExampleTable, Any]:
        """Seeded, exact-count label noise (:func:`visent.data.noise.inject_label_noise`, same draws as on the
        eager list): the answer, clean answer, noise flag and meta columns are replaced by in-memory ones;
        the image column stays memory-mapped and unread."""
        from visent.data.noise import inject_label_noise

        noisy, report = inject_label_noise(list(self), rate, seed, **kwargs)
        ds = self.dataset.remove_columns(["answer", "clean_answer", "is_noisy", "meta"])
        ds = ds.add_column("answer", [ex.answer for ex in noisy])
        ds = ds.add_column("clean_answer", [ex.clean_answer for ex in noisy])
        ds = ds.add_column("is_noisy", [bool(ex.is_noisy) for ex in noisy])
        ds = ds.add_column("meta", [meta_json(ex.meta) for ex in noisy])
        ds = ds.cast(features()) if ds.features != features() else ds
        return ExampleTable(ds, self.report, self.cache_dir, self.hit, self._task), report

    def has_images(self) -> bool:
        return any(self._columns()["images"])

    def trl_dataset(self) -> Any:
        """The rows for TRL's ``GRPOTrainer``: images decoded to RGB PIL per fetched batch."""
        ds = self.dataset
        if self._task is not None:
            ds = ds.remove_columns(["task"]).add_column("task", [self._task] * len(ds))
        return ds.with_transform(DecodeImages())


# ------------------------------------------------------------------------------------------- loading


def _say(message: str, progress: bool) -> None:
    logger.info(message)
    if progress:
        print(f"visent data: {message}", file=sys.stderr, flush=True)


def _source_description(src: Any) -> dict[str, Any]:
    if src.path is not None:
        desc = {"path": str(src.path.resolve()), "files": cache.stat_entries(cache.source_files(src.path))}
        if not src.path.is_absolute():
            # Image paths are stored as resolved from the given path, relative when it is relative: the
            # same file named from another working directory must not reuse them.
            desc["cwd"] = os.getcwd()
        return desc
    return {"hub": src.hub_id, "split": src.split, "fingerprint": getattr(src, "fingerprint", None)}


def _row_total(src: Any) -> int | None:
    """Rows in a parquet source (from its footer), for the progress bar; None when unknown up front."""
    if src.path is None:
        return None
    try:
        import pyarrow.parquet as pq

        from visent.data.formats.rows import iter_files

        files = iter_files(src.path)
        if all(f.suffix.lower() == ".parquet" for f in files):
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    except Exception:  # noqa: BLE001 - only a progress-bar total; the load itself reports real problems
        return None
    return None


def _write(examples: Iterator[Example], path: Path, report: LoadReport, total: int | None, progress: bool,
           label: str) -> int:
    """Stream examples into an Arrow IPC file in small record batches; returns the row count."""
    import pyarrow as pa
    from tqdm.auto import tqdm

    schema = features().arrow_schema
    n = 0
    bar = tqdm(total=total, desc=f"loading {Path(label).name}", unit="row", disable=not progress, delay=2.0,
               mininterval=1.0, file=sys.stderr)
    seen = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        for ex in examples:
            batch.append(record(ex))
            n += 1
            if len(batch) == WRITE_BATCH:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
            if report.rows_seen - seen >= 64:
                bar.update(report.rows_seen - seen)
                seen = report.rows_seen
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
        bar.update(report.rows_seen - seen)
    bar.close()
    return n


def _open(path: Path) -> Any:
    from datasets import Dataset
    from datasets.info import DatasetInfo

    return Dataset.from_file(str(path), info=DatasetInfo(features=features()), in_memory=False)


def _finalize(folder: Path, src: Any) -> None:
    """Run the format's dataset-wide pass (e.g. the class list every classification row shares) on the
    written table's metadata and rewrite its meta column."""
    import pyarrow as pa

    rows = folder / "rows.arrow"
    ds = _open(rows)
    table = ExampleTable(ds, LoadReport())
    light = [Example(id=ex.id, task=ex.task, prompt=ex.prompt, images=[], answer=ex.answer,
                     clean_answer=ex.clean_answer, is_noisy=ex.is_noisy, meta=ex.meta) for ex in table]
    src.fmt.finalize(light, src.options, src.path)
    arrow = ds.data.table
    arrow = arrow.set_column(arrow.schema.get_field_index("meta"), "meta", pa.array([meta_json(ex.meta) for ex in light]))
    out = folder / "rows.final.arrow"
    with pa.OSFile(str(out), "wb") as sink, pa.ipc.new_stream(sink, features().arrow_schema) as writer:
        for b in arrow.to_batches(max_chunksize=WRITE_BATCH):
            writer.write_batch(b)
    del ds, table, arrow
    os.replace(out, rows)


def load_table(
    source: str | Path,
    format: str | None = None,
    *,
    strict: bool = False,
    mapping: dict[str, str] | str | None = None,
    limit: int | None = None,
    image_root: str | Path | None = None,
    allow_missing_images: bool = False,
    image_check: str = "header",
    task: str | None = None,
    classes_file: str | Path | None = None,
    split: str | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = False,
) -> ExampleTable:
    """Load ``source`` in one streaming pass into a cached, memory-mapped :class:`ExampleTable`.

    Arguments are those of :func:`visent.data.loaders.load_examples`, except:

    Args:
        image_check: ``"header"`` by default (open each image, read its size; the pixels are decoded
            when a batch needs them); ``"decode"`` decodes each image once at load time (catches
            truncated files up front); ``"exists"`` only checks image files are there.
        cache_dir: cache root (default :func:`visent.data.cache.cache_root`).
        use_cache: ``False`` rebuilds the cached copy even when one is there.
        progress: show a progress bar on loads longer than 2 s, and say where the cache is (stderr).

    A ``strict`` load that meets a bad row raises and leaves no cache entry.
    """
    options = make_options(mapping, image_root, allow_missing_images, image_check, task, classes_file,
                           keep_encoded=True)
    if limit is not None and limit < 0:
        raise DataError(f"limit must be >= 0, got {limit}", reason="config")
    src = open_source(source, format, options, split)
    opts = {"format": src.fmt.name, "mapping": options.mapping,
            "image_root": str(Path(options.image_root).resolve()) if options.image_root else None,
            "allow_missing_images": allow_missing_images, "image_check": image_check, "task": task,
            "classes_file": cache.stat_entries([Path(classes_file)]) if classes_file else None,
            "strict": strict, "limit": limit,
            # A relative image root also gives relative stored paths (see _source_description).
            "cwd": os.getcwd() if options.image_root and not Path(options.image_root).is_absolute() else None}
    key = cache.cache_key(_source_description(src), opts)
    root = Path(cache_dir) if cache_dir is not None else cache.cache_root()
    folder = cache.entry_dir(key, root)
    if use_cache and cache.is_complete(folder):
        report = _read_report(folder)
        ds = _open(folder / "rows.arrow")
        _say(f"{src.label}: {len(ds)} examples from cache {folder}", progress)
        warn_skipped(report)
        return ExampleTable(ds, report, folder, hit=True)

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    start = time.perf_counter()
    try:
        report = LoadReport(source=src.label, format=src.fmt.name)
        n = _write(iter_examples(src, report, strict=strict, limit=limit), tmp / "rows.arrow", report,
                   _row_total(src) if limit is None else limit, progress, src.label)
        report.loaded = n
        if src.fmt.finalize is not None and n:
            _finalize(tmp, src)
        (tmp / "report.json").write_text(json.dumps(report.to_dict()), encoding="utf-8")
        (tmp / "info.json").write_text(json.dumps({"source": src.label, "options": opts, "rows": n,
                                                   "built_s": round(time.perf_counter() - start, 2)},
                                                  default=str, indent=1), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not use_cache:
        shutil.rmtree(folder, ignore_errors=True)
    folder = cache.publish(tmp, folder)
    _say(f"{src.label}: {n} examples ({report.skipped_total} rows skipped) in "
         f"{time.perf_counter() - start:.1f} s; cached at {folder}", progress)
    warn_skipped(report)
    return ExampleTable(_open(folder / "rows.arrow"), report, folder, hit=False)


def _read_report(folder: Path) -> LoadReport:
    from collections import Counter

    d = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return LoadReport(source=d["source"], format=d["format"], rows_seen=d["rows_seen"], loaded=d["loaded"],
                      skipped=Counter(d["skipped"]), samples=d["samples"], notes=Counter(d["notes"]))

