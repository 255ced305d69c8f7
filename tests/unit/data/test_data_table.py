"""The streaming, cached loader (visent.data.table) against the eager one (visent.data.loaders).

The eager loader is the reference: on every sample dataset both must give the same examples (ids,
prompts, answers, metadata, images: the same paths, or embedded bytes that decode to the same pixels) and
the same skipped-row counts and reasons.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from visent.data.errors import DataError
from visent.data.images import EmbeddedImage, open_image
from visent.data.loaders import detect_format, load_examples
from visent.data.noise import inject_label_noise
from visent.data.table import load_table

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "data"
SHARED = Path(os.environ.get("VISENT_SHARED_DATA", "/work/shared/data"))


def dataset_sources(root: Path) -> list[Path]:
    """Every file or problem folder under ``root`` whose format is detected from its columns."""
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and any((d / "data.json").is_file() for d in path.iterdir() if d.is_dir()):
            out.append(path)
        elif path.is_file() and path.suffix in (".jsonl", ".json", ".pth") and path.name != "data.json":
            try:
                detect_format(path)
            except DataError:
                continue  # not a dataset (logic_form.json, COCO's exist_map.json, ...)
            out.append(path)
    return out


SOURCES = [pytest.param(p, id=str(p.relative_to(FIX.parent))) for p in dataset_sources(FIX)] + [
    pytest.param(p, id="shared/" + str(p.relative_to(SHARED))) for p in dataset_sources(SHARED)]


def assert_same(eager, streamed) -> None:
    assert len(streamed) == len(eager)
    for e, s in zip(eager, streamed):
        assert (s.id, s.task, s.prompt, s.answer, s.clean_answer, s.is_noisy) == (
            e.id, e.task, e.prompt, e.answer, e.clean_answer, e.is_noisy)
        assert s.meta == json.loads(json.dumps(e.meta, default=str))
        assert len(s.images) == len(e.images)
        for ei, si in zip(e.images, s.images):
            if isinstance(ei, str):
                assert si == ei  # the same file, so the same bytes
            else:  # the eager loader decoded embedded bytes; the table kept them
                assert isinstance(si, EmbeddedImage)
                assert open_image(si).tobytes() == open_image(ei).tobytes()


def assert_same_report(eager_report, table_report) -> None:
    assert table_report.rows_seen == eager_report.rows_seen
    assert table_report.loaded == eager_report.loaded
    assert dict(table_report.skipped) == dict(eager_report.skipped)
    assert table_report.samples == eager_report.samples
    assert dict(table_report.notes) == dict(eager_report.notes)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("allow_missing", [False, True])
def test_streaming_equals_eager_on_sample_data(source, allow_missing, tmp_path):
    # The eager loader at its own (old) default, full decoding; the table at its default, header checks.
    eager, eager_report = load_examples(source, allow_missing_images=allow_missing)
    table = load_table(source, allow_missing_images=allow_missing, cache_dir=tmp_path)
    assert_same(eager, list(table))
    assert_same_report(eager_report, table.report)
    # ... and the cached copy gives the same again.
    again = load_table(source, allow_missing_images=allow_missing, cache_dir=tmp_path)
    assert again.hit and again.cache_dir == table.cache_dir
    assert_same(eager, list(again))
    assert_same_report(eager_report, again.report)


def test_there_are_sample_sources():
    assert len(dataset_sources(FIX)) >= 12


# ------------------------------------------------------------------------------------ embedded bytes


def _png(size, color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(size) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def g3k_parquet(tmp_path) -> tuple[Path, list[list[bytes]]]:
    """hiyouga/geometry3k's parquet layout; the second row has two images (PNG then JPEG)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [[_png((30, 20), (200, 0, 0))], [_png((40, 10), (0, 90, 0)), _jpeg((24, 36))],
              [_jpeg((50, 50))]]
    table = pa.Table.from_pylist([
        {"images": [{"bytes": b, "path": f"{i}_{k}.png"} for k, b in enumerate(imgs)],
         "problem": f"<image>Find x{i}.", "answer": str(10 + i)} for i, imgs in enumerate(images)])
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    return path, images


def test_embedded_images_stay_the_published_bytes(g3k_parquet, tmp_path):
    path, images = g3k_parquet
    eager, _ = load_examples(path)
    table = load_table(path, cache_dir=tmp_path / "cache")
    assert_same(eager, list(table))
    assert [[im.read_bytes() for im in ex.images] for ex in table] == images
    # Row 1 keeps its two images in order, through to the rows TRL receives (decoded per batch).
    row = table.trl_dataset()[1]
    assert [im.size for im in row["images"]] == [(40, 10), (24, 36)]
    assert row["prompt"] == [{"role": "user", "content": "Find x1."}]
    assert all(im.mode == "RGB" for im in row["images"])


def test_parsed_image_sizes_come_from_headers(g3k_parquet, tmp_path):
    path, _ = g3k_parquet
    table = load_table(path, cache_dir=tmp_path)
    assert [ex.meta["image_size"] for ex in table] == [[30, 20], [40, 10], [50, 50]]


# ------------------------------------------------------------------------------------------- the cache


def test_cache_hit_invalidation_and_option_keys(g3k_parquet, tmp_path):
    import pyarrow.parquet as pq

    path, _ = g3k_parquet
    cache = tmp_path / "cache"
    first = load_table(path, cache_dir=cache)
    second = load_table(path, cache_dir=cache)
    assert not first.hit and second.hit and first.cache_dir == second.cache_dir
    assert load_table(path, cache_dir=cache, limit=2).cache_dir != first.cache_dir  # options are in the key
    assert not load_table(path, cache_dir=cache, use_cache=False).hit

    # The source changes (one row fewer): a new key, rebuilt, and the new content served.
    pq.write_table(pq.read_table(path).slice(0, 2), path)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    changed = load_table(path, cache_dir=cache)
    assert not changed.hit and changed.cache_dir != first.cache_dir and len(changed) == 2


def test_strict_names_file_row_and_field_and_leaves_no_cache(tmp_path):
    (tmp_path / "a.png").write_bytes(_png((8, 8), (1, 2, 3)))
    rows = [{"id": "a", "question": "q", "answer": "1", "image_path": "a.png"},
            {"id": "b", "question": "q", "answer": "", "image_path": "a.png"}]
    (tmp_path / "k12.json").write_text(json.dumps(rows))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        load_table(tmp_path / "k12.json", format="mmk12", strict=True, cache_dir=cache)
    assert "k12.json row 1, field 'answer'" in str(err.value) and err.value.reason == "missing_answer"
    assert not cache.exists() or not any(cache.iterdir())
    lenient = load_table(tmp_path / "k12.json", format="mmk12", cache_dir=cache)
    assert [ex.id for ex in lenient] == ["a"] and dict(lenient.report.skipped) == {"missing_answer": 1}


def test_truncated_image_fails_at_batch_time_naming_the_row(tmp_path):
    data = _png((40, 30), (9, 9, 9))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # the header survives, the pixels do not
    rows = [{"id": "a", "question": "q", "answer": "1", "image_path": "cut.png"}]
    (tmp_path / "k12.json").write_text(json.dumps(rows))
    table = load_table(tmp_path / "k12.json", format="mmk12", cache_dir=tmp_path / "c")
    assert len(table) == 1  # header check: accepted
    with pytest.raises(DataError) as err:
        table.trl_dataset()[0]
    assert "k12.json row 0, field 'images'" in str(err.value) and "image_check='decode'" in str(err.value)
    decoded = load_table(tmp_path / "k12.json", format="mmk12", image_check="decode", cache_dir=tmp_path / "c")
    assert len(decoded) == 0 and dict(decoded.report.skipped) == {"corrupt_image": 1}


# ---------------------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("source,rate", [(FIX / "screenspot_v2" / "screenspot_web_v2.json", 0.5),
                                         (FIX / "visual_rft" / "derived" / "pets_val_decoded.jsonl", 0.3),
                                         (FIX / "mmk12" / "k12.json", 0.6)])
def test_label_noise_on_the_table_equals_noise_on_the_list(source, rate, tmp_path):
    eager, _ = load_examples(source, allow_missing_images=True)
    table = load_table(source, allow_missing_images=True, cache_dir=tmp_path)
    noisy_list, list_report = inject_label_noise(eager, rate, seed=3)
    noisy_table, table_report = table.with_label_noise(rate, seed=3)
    assert table_report.to_dict() == list_report.to_dict() and table_report.n_corrupted > 0
    assert_same(noisy_list, list(noisy_table))
    rows = noisy_table.trl_dataset()
    assert rows["answer"] == [ex.answer for ex in noisy_list]
    assert rows["is_noisy"] == [ex.is_noisy for ex in noisy_list]
    assert not any(ex.is_noisy for ex in table)  # the cached table itself is untouched


def test_hub_dataset_images_are_read_undecoded(monkeypatch, tmp_path):
    """A Hub split (here a local Dataset standing in for load_dataset's result) with an Image column: the
    table gets the published bytes (not decoded and re-encoded), the eager loader PIL images, and both
    the same examples."""
    import datasets

    published = [_jpeg((12, 9)), _jpeg((7, 15))]  # JPEG: a decode + re-encode would not give these bytes back
    ds = datasets.Dataset.from_dict(
        {"images": [[{"bytes": b, "path": f"{i}.png"}] for i, b in enumerate(published)],
         "problem": ["<image>a?", "<image>b?"], "answer": ["1", "2"]},
        features=datasets.Features({"images": datasets.List(datasets.Image()), "problem": datasets.Value("string"),
                                    "answer": datasets.Value("string")}))
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, split=None: ds)
    eager, _ = load_examples("hf:someone/geo", split="train")
    table = load_table("hf:someone/geo", split="train", cache_dir=tmp_path)
    assert table.report.source == "hf:someone/geo[train]" and table.report.format == "geometry3k"
    assert_same(eager, list(table))
    assert [ex.images[0].read_bytes() for ex in table] == published
