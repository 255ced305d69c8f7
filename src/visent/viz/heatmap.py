"""``tokens.html``: responses with every token coloured by a selectable signal.

``render_tokens_html(records) -> str`` is a pure function of :class:`~visent.viz.records.TokenRecord`
data. The page is self-contained (inline CSS, images as base64 PNG, no script, no external asset), so it
can be mailed or attached to a run as one file.

Page layout: a header with the run settings, one radio button per signal and the colour legend of the
selected signal; then one section per response: the clean and perturbed images side by side, the prompt,
the response with each token coloured, the selected tokens boxed and underlined, and a small summary
(mean JSD of selected vs unselected tokens, share of selected tokens below the response's median entropy).
Hovering a token shows its exact values (``title`` tooltip).

Switching signals needs no JavaScript: every token carries one CSS custom property per signal
(``--c0``, ``--c1`` …) and a ``:checked`` radio selects which one paints the background.

Colour scales are shared by all responses on the page, so colours compare across examples:
non-negative signals run white → red over ``[min, max]`` of the page; signed signals (the entropy gap) run
blue → white → red over ``[−m, m]`` with ``m = max |value|``.

All model and dataset text (tokens, prompt, answer, ids, settings) is untrusted and HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from visent.viz.records import TokenRecord, page_summary, record_summary

__all__ = ["SIGNAL_LABELS", "color_for", "render_tokens_html", "signal_label", "write_tokens_html"]

SIGNAL_LABELS: dict[str, str] = {
    "entropy": "entropy H",
    "entropy_perturbed": "perturbed entropy H'",
    "jsd": "JSD(P, Q)",
    "kl": "KL(P‖Q)",
    "gap": "entropy gap ΔH (H' − H)",
}

# Order of signals in the selector (anything else follows in first-seen order).
_PREFERRED = ("jsd", "entropy", "gap", "entropy_perturbed", "kl")

# Colour ramps (RGB stops): white → orange → red for magnitudes; blue → white → red for signed values.
_SEQUENTIAL = ((255, 255, 255), (253, 174, 97), (215, 48, 39))
_DIVERGING = ((69, 117, 180), (255, 255, 255), (215, 48, 39))


def signal_label(name: str) -> str:
    """Human-readable name of a signal (``score:vepo`` → ``vepo score``)."""
    if name.startswith("score:"):
        return f"{name[len('score:'):]} score"
    return SIGNAL_LABELS.get(name, name)


def _ramp(stops: Sequence[tuple[int, int, int]], t: float) -> str:
    """Colour at ``t`` in [0, 1] along piecewise-linear ``stops``, as ``#rrggbb``."""
    t = min(1.0, max(0.0, t))
    pos = t * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    f = pos - i
    rgb = [round(a + (b - a) * f) for a, b in zip(stops[i], stops[i + 1])]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class _Scale:
    """Maps one signal's values to colours, shared across the page."""

    def __init__(self, values: Sequence[float]):
        finite = [v for v in values if math.isfinite(v)]
        self.signed = bool(finite) and min(finite) < 0
        if self.signed:
            m = max(abs(v) for v in finite)
            self.low, self.high = -m, m
        else:
            # [min, max] rather than [0, max]: entropies that all sit near some level would otherwise
            # all paint the same red; the legend prints both ends, so the stretch is visible.
            self.low, self.high = (min(finite), max(finite)) if finite else (0.0, 0.0)

    def color(self, v: float) -> str:
        if not math.isfinite(v):
            return "transparent"
        span = self.high - self.low
        t = 0.5 if self.signed and span == 0 else ((v - self.low) / span if span > 0 else 0.0)
        return _ramp(_DIVERGING if self.signed else _SEQUENTIAL, t)

    def gradient(self) -> str:
        stops = _DIVERGING if self.signed else _SEQUENTIAL
        return ", ".join("#{:02x}{:02x}{:02x}".format(*s) for s in stops)


def color_for(values: Sequence[float], v: float) -> str:
    """The colour the page gives value ``v`` of a signal whose values on the page are ``values``."""
    return _Scale(values).color(v)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.6g}"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _image_data_uri(image: Any, max_side: int, where: str) -> tuple[str, int, int]:
    """``(data URI, width, height)`` of a PIL image (or image path) as PNG, shrunk to ``max_side``."""
    from PIL import Image

    if isinstance(image, str):
        try:
            with Image.open(image) as handle:
                image = handle.convert("RGB")
        except OSError as exc:
            raise ValueError(f"{where}: cannot open image {image!r}: {exc}") from None
    if not hasattr(image, "save"):
        raise TypeError(f"{where}: expected a PIL image or a path, got {type(image).__name__}")
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return uri, image.size[0], image.size[1]


def _signal_order(records: Sequence[TokenRecord], signals: Sequence[str] | None) -> list[str]:
    present: list[str] = []
    for r in records:
        for name in r.signals:
            if name not in present:
                present.append(name)
    if signals is not None:
        missing = [s for s in signals if s not in present]
        if missing:
            raise ValueError(
                f"signal(s) {', '.join(map(repr, missing))} not in any record; present: {', '.join(present) or 'none'}"
            )
        return list(signals)
    methods = []
    for r in records:
        name = f"score:{r.selection_method}"
        if name in present and name not in methods:
            methods.append(name)
    ordered = methods + [s for s in _PREFERRED if s in present]
    return ordered + [s for s in present if s not in ordered]


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.6em 1em;z-index:2}
h1{font-size:1.15em;margin:0 0 .3em}
.settings{font-size:.85em;color:#555;margin:.2em 0}
.sigradio{position:absolute;opacity:0;pointer-events:none}
nav label{display:inline-block;border:1px solid #bbb;border-radius:4px;padding:.1em .5em;margin:.15em .2em .15em 0;
 cursor:pointer;font-size:.9em;background:#f3f3f3}
.legend{display:none;align-items:center;gap:.5em;font-size:.85em;margin-top:.3em}
.bar{width:220px;height:12px;border:1px solid #999}
.selsample{border:1.5px solid #111;border-bottom-width:3px;padding:0 .2em}
main{padding:0 1em 2em}
section.example{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}
h2{font-size:1em;margin:.2em 0 .5em}
.images{display:flex;gap:1em;flex-wrap:wrap}
figure{margin:0;text-align:center;font-size:.8em;color:#555}
figure img{image-rendering:pixelated;border:1px solid #ccc;display:block}
.prompt,.answer{margin:.5em 0;font-size:.9em}
.prompt pre{white-space:pre-wrap;margin:.2em 0;font-family:inherit;background:#f6f6f6;padding:.3em}
.response{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;line-height:1.9;
 border:1px solid #eee;padding:.4em;font-size:.95em}
.t{border-radius:2px}
.t.sel{outline:1.5px solid #111;border-bottom:3px solid #111}
.t.empty{display:inline-block;min-width:.35em;height:1em}
.t.k-anchor{color:#0b3d91;font-weight:800;border-top:6px solid #0b57d0;padding:0 .15em}
.t.k-fork{color:#7b1fa2;font-style:italic;border-top:6px dashed #ab47bc;padding:0 .15em}
.t.k-derived{border-top:6px double #888}
.kinds{font-size:.85em;margin-top:.3em}
.kinds span.t{padding:0 .3em;margin-right:.6em}
table.summary{border-collapse:collapse;font-size:.85em;margin-top:.5em}
table.summary td{border:1px solid #ddd;padding:.15em .5em}
"""


_KIND_TEXT = {
    "anchor": "image-anchored (read from the image)",
    "fork": "fork (free wording / ordering choice, image-independent)",
    "derived": "derived (copied from text already written)",
}


def _kinds_legend(records: Sequence[TokenRecord]) -> str:
    present = {k for r in records for k in (r.kinds or []) if k}
    if not present:
        return ""
    items = " · ".join(
        f'<span class="t k-{k}">{_esc(k)}</span>{_esc(_KIND_TEXT[k].split(" (")[1].rstrip(")"))}'
        for k in ("anchor", "fork", "derived")
        if k in present
    )
    return f'<div class="kinds">Token roles from the task generator: {items}</div>'


def _signal_css(n: int) -> str:
    rules = []
    for i in range(n):
        rules.append(f"#sig-{i}:checked~main .t{{background-color:var(--c{i})}}")
        rules.append(f"#sig-{i}:checked~header .leg-{i}{{display:flex}}")
        rules.append(f"#sig-{i}:checked~header label[for=sig-{i}]{{background:#222;color:#fff;border-color:#222}}")
    return "\n".join(rules)


def _tooltip(record: TokenRecord, i: int, order: Sequence[str]) -> str:
    lines = [f"token {i}: {record.tokens[i]!r}"]
    if record.token_ids is not None:
        lines[0] += f" (id {record.token_ids[i]})"
    for name in order:
        if name in record.signals:
            lines.append(f"{signal_label(name)} = {_fmt(record.signals[name][i])}")
    lines.append(f"selected by {record.selection_method}" if record.selected[i] else "not selected")
    if record.kinds is not None and record.kinds[i]:
        lines.append(f"role: {_KIND_TEXT.get(record.kinds[i], record.kinds[i])}")
    return "\n".join(lines)


def _response_html(record: TokenRecord, order: Sequence[str], scales: Mapping[str, _Scale]) -> str:
    spans = []
    for i, tok in enumerate(record.tokens):
        style = ";".join(
            f"--c{k}:{scales[name].color(record.signals[name][i]) if name in record.signals else 'transparent'}"
            for k, name in enumerate(order)
        )
        kind = record.kinds[i] if record.kinds is not None else None
        cls = "t" + (" sel" if record.selected[i] else "") + ("" if tok else " empty") + (f" k-{kind}" if kind else "")
        spans.append(
            f'<span class="{cls}" data-i="{i}" style="{style}" title="{_esc(_tooltip(record, i, order))}">{_esc(tok)}</span>'
        )
    return "".join(spans)


def _images_html(record: TokenRecord, max_side: int, min_display: int) -> str:
    figs = []
    pairs = [("clean", record.images), ("perturbed", record.perturbed_images)]
    for k in range(max((len(imgs) for _, imgs in pairs), default=0)):
        for label, imgs in pairs:
            if k >= len(imgs):
                continue
            uri, w, h = _image_data_uri(imgs[k], max_side, f"record {record.id!r} {label} image {k}")
            # Lab images are ~56 px: scale small ones up by an integer factor so pixels stay crisp.
            scale = max(1, math.ceil(min_display / max(w, h))) if max(w, h) < min_display else 1
            caption = label + (f" #{k + 1}" if max(len(record.images), len(record.perturbed_images)) > 1 else "")
            figs.append(
                f'<figure><img src="{uri}" width="{w * scale}" height="{h * scale}" alt="{_esc(caption)}">'
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
    return f'<div class="images">{"".join(figs)}</div>' if figs else ""


def _summary_html(record: TokenRecord) -> str:
    s = record_summary(record)
    rows = [
        ("tokens (selected / all)", f"{int(s['n_selected'])} / {int(s['n_tokens'])}"),
        ("mean JSD, selected tokens", _fmt(s.get("jsd_selected_mean"))),
        ("mean JSD, unselected tokens", _fmt(s.get("jsd_unselected_mean"))),
        ("selected tokens below the median entropy", _fmt(s.get("low_entropy_fraction"))),
        ("reward", _fmt(record.reward)),
    ]
    rows += [(str(k), str(v)) for k, v in record.meta.items()]
    cells = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}</table>'


def render_tokens_html(
    records: Sequence[TokenRecord],
    *,
    signals: Sequence[str] | None = None,
    title: str = "visent token heatmap",
    settings: Mapping[str, Any] | None = None,
    max_image_side: int = 448,
    min_image_display: int = 168,
) -> str:
    """The self-contained HTML page for ``records``.

    Args:
        records: responses to show, in order.
        signals: which signals are selectable, in order (default: the selection score first, then JSD,
            entropy, gap, perturbed entropy, KL, then any other); the first is shown on load.
        title: page title.
        settings: run settings shown in the header (model, perturbation, seed …).
        max_image_side: images larger than this (pixels) are shrunk before embedding.
        min_image_display: images smaller than this are displayed enlarged by an integer factor.
    """
    records = list(records)
    order = _signal_order(records, signals)
    scales = {name: _Scale([v for r in records for v in r.signals.get(name, [])]) for name in order}

    radios = "".join(
        f'<input type="radio" name="signal" class="sigradio" id="sig-{i}"{" checked" if i == 0 else ""}>'
        for i in range(len(order))
    )
    labels = "".join(f'<label for="sig-{i}">{_esc(signal_label(n))}</label>' for i, n in enumerate(order))
    legends = "".join(
        f'<div class="legend leg-{i}"><span>{_esc(signal_label(n))}:</span><span>{_fmt(scales[n].low)}</span>'
        f'<span class="bar" style="background:linear-gradient(to right,{scales[n].gradient()})"></span>'
        f'<span>{_fmt(scales[n].high)}</span><span class="selsample">selected token</span></div>'
        for i, n in enumerate(order)
    )
    settings_html = ""
    if settings:
        settings_html = '<div class="settings">' + " · ".join(
            f"{_esc(k)}: <b>{_esc(v)}</b>" for k, v in settings.items()
        ) + "</div>"

    sections = []
    for n, r in enumerate(records):
        answer = "" if r.answer is None else f'<div class="answer"><b>Answer (label):</b> {_esc(r.answer)}</div>'
        sections.append(
            f'<section class="example" id="ex-{n}"><h2>#{n + 1} · {_esc(r.id)}</h2>'
            f"{_images_html(r, max_image_side, min_image_display)}"
            f'<div class="prompt"><b>Prompt</b><pre>{_esc(r.prompt)}</pre></div>{answer}'
            f'<div class="response">{_response_html(r, order, scales)}</div>'
            f"{_summary_html(r)}</section>"
        )
    pooled = page_summary(records)
    overall = (
        f'<div class="settings">All {int(pooled["n_responses"])} responses: {int(pooled["n_selected"])} of '
        f'{int(pooled["n_tokens"])} tokens selected; mean JSD selected {_fmt(pooled["jsd_selected_mean"])} vs '
        f'unselected {_fmt(pooled["jsd_unselected_mean"])}; selected tokens below their response\'s median '
        f'entropy: {_fmt(pooled["low_entropy_fraction"])}</div>'
    )
    empty = "" if records else "<p>No records.</p>"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_CSS}{_signal_css(len(order))}</style></head><body>"
        f"{radios}<header><h1>{_esc(title)}</h1>{settings_html}{overall}<nav>Colour by: {labels}</nav>{legends}"
        f"{_kinds_legend(records)}"
        '<div class="settings">Selected tokens are boxed and underlined; hover a token for its exact values.</div>'
        f"</header><main>{''.join(sections)}{empty}</main></body></html>\n"
    )


def write_tokens_html(records: Sequence[TokenRecord], path: str, **kwargs: Any) -> str:
    """Render ``records`` (see :func:`render_tokens_html`) to ``path``; returns the path."""
    import os

    page = render_tokens_html(records, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
