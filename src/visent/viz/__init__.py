"""Token heatmaps and training curves.

- ``records.py``  ``TokenRecord`` (one scored response) and ``record_summary``
- ``scoring.py``  ``score_responses``: greedy or given responses → records, through the trainer's
                  counterfactual pass (clean + perturbed image, statistics from hidden states)
- ``heatmap.py``  ``render_tokens_html`` / ``write_tokens_html``: the self-contained ``tokens.html``
- ``curves.py``   ``plot_curves``: ``curves.png`` from ``metrics.jsonl`` files
- ``cli.py``      ``visent inspect``

Imports are lazy: ``import visent.viz`` pulls in neither torch nor matplotlib.
"""

from __future__ import annotations

__all__ = ["TokenRecord", "plot_curves", "record_summary", "render_tokens_html", "score_responses", "write_tokens_html"]

_WHERE = {
    "TokenRecord": "visent.viz.records",
    "record_summary": "visent.viz.records",
    "score_responses": "visent.viz.scoring",
    "render_tokens_html": "visent.viz.heatmap",
    "write_tokens_html": "visent.viz.heatmap",
    "plot_curves": "visent.viz.curves",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'visent.viz' has no attribute {name!r}")
