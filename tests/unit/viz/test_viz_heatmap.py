"""tokens.html: escaping, token order, selection marks, tooltip numbers, colours, embedded images."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from visent.viz.heatmap import color_for, render_tokens_html
from visent.viz.records import TokenRecord, page_summary, record_summary

HOSTILE = [
    "<script>alert(1)</script>",
    '" onmouseover="alert(2)',
    "&amp; &lt;",
    "\n",
    "",
    "plain",
    "'><img src=x onerror=alert(3)>",
]


class _Page(HTMLParser):
    """Collects token spans per section (text, classes, attributes), images and all tag names."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[list[dict]] = []
        self.tags: list[str] = []
        self.attr_names: set[str] = set()
        self.imgs: list[dict] = []
        self._span: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attr_names.update(a)
        if tag == "section":
            self.sections.append([])
        if tag == "img":
            self.imgs.append(a)
        if tag == "span" and "t" in (a.get("class") or "").split():
            self._span = {"attrs": a, "classes": a["class"].split(), "text": ""}

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.sections[-1].append(self._span)
            self._span = None

    def handle_data(self, data):
        if self._span is not None:
            self._span["text"] += data


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _record(tokens, seed=0, rid="ex-0", with_images=True) -> TokenRecord:
    g = torch.Generator().manual_seed(seed)
    n = len(tokens)
    jsd = torch.rand(n, generator=g).mul(0.69).tolist()
    ent = torch.rand(n, generator=g).mul(3).tolist()
    gap = (torch.rand(n, generator=g) - 0.6).tolist()
    score = torch.rand(n, generator=g).tolist()
    selected = [bool(b) for b in (torch.rand(n, generator=g) < 0.4).tolist()]
    imgs = []
    if with_images:
        imgs = [Image.new("RGB", (56, 28), (10, 200, 30)), Image.new("RGB", (500, 250), (250, 0, 0))]
    return TokenRecord(
        id=rid,
        prompt="How many <b>red</b> shapes? <script>x()</script>",
        tokens=list(tokens),
        signals={"entropy": ent, "jsd": jsd, "gap": gap, "score:vepo": score},
        selected=selected,
        images=imgs[:1],
        perturbed_images=imgs[1:],
        answer="<3>",
        reward=1.0,
    )


@pytest.fixture
def records():
    return [_record(HOSTILE, seed=0, rid="</h2><script>bad()</script>"), _record(["a", "b", "c", "<", ">"], seed=1)]


def test_hostile_text_is_escaped_and_no_script_runs(records):
    page = render_tokens_html(records, settings={"model": "<script>m</script>"})
    parsed = _parse(page)
    assert "script" not in parsed.tags
    assert not [a for a in parsed.attr_names if a.startswith("on")]  # no event handler attribute
    # The one <img> per image is ours; the hostile token's "<img ... onerror>" stays text.
    assert len([t for t in parsed.tags if t == "img"]) == 2 * len(records)
    for raw in ("<script>", 'onmouseover="', "<img src=x", "<b>red</b>"):
        assert raw not in page
    # Only our own tags, and no external asset of any kind.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "url(" not in page


def test_every_token_in_order_with_selection_marks(records):
    parsed = _parse(render_tokens_html(records))
    assert len(parsed.sections) == len(records)
    for spans, rec in zip(parsed.sections, records):
        assert [s["text"] for s in spans] == rec.tokens
        assert [int(s["attrs"]["data-i"]) for s in spans] == list(range(len(rec.tokens)))
        assert ["sel" in s["classes"] for s in spans] == rec.selected


def test_tooltip_numbers_equal_the_arrays(records):
    parsed = _parse(render_tokens_html(records))
    labels = {"entropy": "entropy H", "jsd": "JSD(P, Q)", "gap": "entropy gap ΔH (H' − H)", "score:vepo": "vepo score"}
    for spans, rec in zip(parsed.sections, records):
        for i, span in enumerate(spans):
            lines = span["attrs"]["title"].split("\n")
            assert lines[0].startswith(f"token {i}: {rec.tokens[i]!r}")
            values = dict(line.split(" = ", 1) for line in lines[1:] if " = " in line)
            for name, label in labels.items():
                assert math.isclose(float(values[label]), rec.signals[name][i], rel_tol=1e-5, abs_tol=1e-12)
            assert lines[-1] == ("selected by vepo" if rec.selected[i] else "not selected")


def test_colours_follow_a_page_wide_scale(records):
    order = ["score:vepo", "jsd", "entropy", "gap"]  # default order: selection score first, then JSD, H, ΔH
    parsed = _parse(render_tokens_html(records))
    for k, name in enumerate(order):
        everything = [v for r in records for v in r.signals[name]]
        for spans, rec in zip(parsed.sections, records):
            for span, v in zip(spans, rec.signals[name]):
                style = dict(part.split(":", 1) for part in span["attrs"]["style"].split(";"))
                assert style[f"--c{k}"] == color_for(everything, v)
    # Hand-checked ramps: the page minimum is white, the middle orange and the maximum the darkest red
    # for a non-negative signal; a signed one is blue at −max|v|, white at 0 and red at +max|v|.
    assert color_for([0.0, 0.5, 2.0], 0.0) == "#ffffff"
    assert color_for([0.0, 0.5, 2.0], 2.0) == "#d73027"
    assert color_for([1.0, 3.0], 1.0) == "#ffffff" and color_for([1.0, 3.0], 2.0) == "#fdae61"
    assert color_for([-1.0, 0.25], -1.0) == "#4575b4"
    assert color_for([-1.0, 0.25], 0.0) == "#ffffff"
    assert color_for([-1.0, 0.25], 1.0) == "#d73027"


def test_images_are_embedded_pngs_side_by_side(records):
    parsed = _parse(render_tokens_html(records, max_image_side=200))
    assert len(parsed.imgs) == 2 * len(records)
    sizes = []
    for img in parsed.imgs:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        decoded = Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix):])))
        assert decoded.format == "PNG"
        sizes.append(decoded.size)
    # The 56×28 clean image is embedded as is (shown enlarged); the 500×250 perturbed one is shrunk.
    assert sizes[:2] == [(56, 28), (200, 100)]
    assert [img["alt"] for img in parsed.imgs[:2]] == ["clean", "perturbed"]


def test_one_selector_and_legend_per_signal(records):
    page = render_tokens_html(records, signals=["jsd", "gap"])
    assert page.count('name="signal"') == 2 and page.count('class="legend leg-') == 2
    assert "#sig-1:checked~main .t{background-color:var(--c1)}" in page
    with pytest.raises(ValueError, match="'kl'.*present: entropy, jsd, gap, score:vepo"):
        render_tokens_html(records, signals=["kl"])


def test_record_summary_hand_computed():
    rec = TokenRecord(
        id="x",
        prompt="",
        tokens=["a", "b", "c", "d"],
        signals={"jsd": [0.1, 0.4, 0.2, 0.3], "entropy": [3.0, 1.0, 2.0, 5.0]},
        selected=[False, True, False, True],
    )
    s = record_summary(rec)
    assert s["n_tokens"] == 4 and s["n_selected"] == 2
    assert math.isclose(s["jsd_selected_mean"], 0.35) and math.isclose(s["jsd_unselected_mean"], 0.15)
    # sorted entropies 1, 2, 3, 5 → lower median 2; selected entropies 1 (below) and 5 (not) → 0.5
    assert s["low_entropy_fraction"] == 0.5


def test_page_summary_pools_tokens_and_is_shown():
    a = TokenRecord("a", "", ["x"] * 4, {"jsd": [0.1, 0.4, 0.2, 0.3], "entropy": [3.0, 1.0, 2.0, 5.0]},
                    [False, True, False, True])
    b = TokenRecord("b", "", ["y"] * 2, {"jsd": [0.6, 0.0], "entropy": [0.5, 0.7]}, [True, False])
    s = page_summary([a, b])
    # selected JSD 0.4, 0.3, 0.6 → 1.3/3; unselected 0.1, 0.2, 0.0 → 0.1; below-median: a → 1 of 2,
    # b: lower median of (0.5, 0.7) is 0.5, 0.5 is not below it → 0; pooled 1/3.
    assert math.isclose(s["jsd_selected_mean"], 1.3 / 3) and math.isclose(s["jsd_unselected_mean"], 0.1)
    assert math.isclose(s["low_entropy_fraction"], 1 / 3)
    assert (s["n_responses"], s["n_tokens"], s["n_selected"]) == (2, 6, 3)
    page = render_tokens_html([a, b])
    assert "3 of 6 tokens selected; mean JSD selected 0.433333 vs unselected 0.1" in page


def test_low_entropy_fraction_matches_the_trainer_metric_definition():
    # The trainer logs mean over selected tokens of (H < nanmedian(H over the response)).
    g = torch.Generator().manual_seed(3)
    for n in (1, 2, 5, 8, 13):
        ent = torch.rand(n, generator=g)
        ent[n // 2] = ent[0]  # ties
        sel = torch.rand(n, generator=g) < 0.5
        sel[0] = True
        rec = TokenRecord("x", "", ["t"] * n, {"entropy": ent.tolist()}, sel.tolist())
        expected = (ent < ent.nanmedian())[sel].float().mean().item()
        assert math.isclose(record_summary(rec)["low_entropy_fraction"], expected, rel_tol=1e-6)


def test_bad_records_fail_naming_the_record_and_field():
    with pytest.raises(ValueError, match=r"record 'r7': signal 'jsd' has 2 values but there are 3 tokens"):
        TokenRecord("r7", "", ["a", "b", "c"], {"jsd": [0.0, 0.1]}, [True, False, False])
    with pytest.raises(ValueError, match=r"record 'r8': selected has 1 entries"):
        TokenRecord("r8", "", ["a", "b"], {}, [True])
    with pytest.raises(TypeError, match=r"record 'r9': tokens\[1\]"):
        TokenRecord("r9", "", ["a", 5], {}, [True, False])


def test_empty_page_renders():
    page = render_tokens_html([])
    assert page.startswith("<!DOCTYPE html>") and "No records." in page
