"""VEPO's premise as numbers: are image-anchored tokens low-entropy and missed by entropy selection?

VEPO (METHOD.md §1) argues that the tokens that read the image carry *low* entropy, so selecting the
top-20% tokens by entropy trains the image-independent "forks" instead, while its counterfactual score
(entropy coupled with the JSD under a perturbed image) finds the image-anchored ones. On a lab task whose
generator marks which characters of a response are forks and which are read from the image
(``visent.data.synthetic.label_response``: the ``tally`` task), that claim can be measured on the model's own
responses instead of assumed:

- mean entropy and mean JSD of anchored tokens vs the rest (and vs the forks alone);
- the share of anchored tokens among the entropy top-ρ of each response vs among the VEPO top-ρ
  (and their base rate among all tokens);
- the Jaccard overlap of the entropy top-ρ and the VEPO top-ρ (``select/overlap_entropy_top`` of a
  VEPO training run, measured here on fixed responses).

The top-ρ sets are chosen exactly as the trainer chooses them (``visent.core.selection.select_tokens``,
``ceil(ρ·n)`` tokens per response, ``n`` including the end-of-turn token), from the records that
``visent.viz.scoring.score_responses`` returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from visent.data.synthetic import label_response, token_kinds
from visent.eval.report import pct
from visent.viz.records import TokenRecord, score_signal

__all__ = ["PREMISE_KEYS", "format_premise", "measure_premise", "premise_metrics", "record_kinds"]

# The numbers ``premise_metrics`` returns, in the order reports show them.
PREMISE_KEYS: tuple[str, ...] = (
    "entropy_anchor",
    "entropy_fork",
    "entropy_derived",
    "entropy_rest",
    "jsd_anchor",
    "jsd_fork",
    "jsd_derived",
    "jsd_rest",
    "anchor_share_all",
    "anchor_share_entropy_top",
    "anchor_share_vepo_top",
    "fork_share_entropy_top",
    "fork_share_vepo_top",
    "overlap_entropy_vepo",
)


def record_kinds(record: TokenRecord) -> list[str | None]:
    """Per token of ``record``: ``"anchor"``, ``"fork"`` or ``None`` (``label_response`` on its text)."""
    text = "".join(record.tokens)
    return token_kinds(record.tokens, label_response(text))


def _top_mask(values: Sequence[float], ratio: float) -> list[bool]:
    """The trainer's top-``ratio`` of one response (``select_tokens``, response granularity)."""
    from visent.core.selection import select_tokens

    v = torch.tensor([list(values)], dtype=torch.float64)
    mask = select_tokens(v, torch.ones_like(v), ratio, "response", "top")
    return [bool(x) for x in mask[0].tolist()]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def premise_metrics(records: Sequence[TokenRecord], ratio: float = 0.2) -> dict[str, float]:
    """The premise numbers pooled over the tokens of ``records`` (NaN where a group is empty).

    Each record needs the signals ``entropy``, ``jsd`` and ``score:vepo`` (``score_responses`` gives
    them). Returns ``PREMISE_KEYS`` plus ``n_responses``, ``n_tokens``, ``n_anchor``, ``n_fork``:

    - ``entropy_anchor`` / ``entropy_fork`` / ``entropy_derived`` / ``entropy_rest``: mean entropy (nats) of
      anchored tokens, forks, derived tokens (the copied count and answer) and of every token that is
      not anchored (forks and derived tokens included);
    - ``jsd_*``: the same groups' mean clean-vs-perturbed JSD (nats);
    - ``anchor_share_all``: anchored tokens / all tokens (the share a random selection would get);
    - ``anchor_share_entropy_top`` / ``anchor_share_vepo_top``: anchored share of the entropy top-ρ and of
      the VEPO top-ρ tokens (pooled over responses); ``fork_share_*`` likewise for forks;
    - ``overlap_entropy_vepo``: |E ∩ V| / |E ∪ V| pooled over responses, E and V the two top-ρ sets (the
      trainer's ``select/overlap_entropy_top`` for a VEPO run).
    """
    ent = {"anchor": [], "fork": [], "derived": [], None: []}
    jsd = {"anchor": [], "fork": [], "derived": [], None: []}
    top = {"entropy": [], "vepo": []}
    inter = union = 0
    n_tokens = 0
    for r in records:
        kinds = record_kinds(r)
        h, j = r.signals["entropy"], r.signals["jsd"]
        for k, hv, jv in zip(kinds, h, j):
            ent[k].append(hv)
            jsd[k].append(jv)
        e_top = _top_mask(h, ratio)
        v_top = _top_mask(r.signals[score_signal("vepo")], ratio)
        top["entropy"] += [k for k, s in zip(kinds, e_top) if s]
        top["vepo"] += [k for k, s in zip(kinds, v_top) if s]
        inter += sum(a and b for a, b in zip(e_top, v_top))
        union += sum(a or b for a, b in zip(e_top, v_top))
        n_tokens += len(kinds)

    def share(kinds: list[str | None], kind: str) -> float:
        return kinds.count(kind) / len(kinds) if kinds else math.nan

    n_anchor, n_fork = len(ent["anchor"]), len(ent["fork"])
    return {
        "n_responses": float(len(records)),
        "n_tokens": float(n_tokens),
        "n_anchor": float(n_anchor),
        "n_fork": float(n_fork),
        "entropy_anchor": _mean(ent["anchor"]),
        "entropy_fork": _mean(ent["fork"]),
        "entropy_derived": _mean(ent["derived"]),
        "entropy_rest": _mean(ent["fork"] + ent["derived"] + ent[None]),
        "jsd_anchor": _mean(jsd["anchor"]),
        "jsd_fork": _mean(jsd["fork"]),
        "jsd_derived": _mean(jsd["derived"]),
        "jsd_rest": _mean(jsd["fork"] + jsd["derived"] + jsd[None]),
        "anchor_share_all": n_anchor / n_tokens if n_tokens else math.nan,
        "anchor_share_entropy_top": share(top["entropy"], "anchor"),
        "anchor_share_vepo_top": share(top["vepo"], "anchor"),
        "fork_share_entropy_top": share(top["entropy"], "fork"),
        "fork_share_vepo_top": share(top["vepo"], "fork"),
        "overlap_entropy_vepo": inter / union if union else math.nan,
    }


def measure_premise(
    model: Any,
    processor: Any,
    examples: Sequence[Any],
    *,
    seed: int = 0,
    perturbation: str = "pixel_values_gaussian",
    strength: float | None = None,
    ratio: float = 0.2,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> tuple[dict[str, float], list[TokenRecord]]:
    """``(premise_metrics, records)`` on the greedy responses of ``model`` to ``examples``.

    The perturbation is VEPO's (``src/visent/configs/vepo.yaml``: Gaussian noise of std 2.0 on the normalised
    ``pixel_values``), drawn per prompt from ``seed`` as in training.
    """
    from visent.viz.scoring import score_responses

    records = score_responses(
        model,
        processor,
        examples,
        perturbation=perturbation,
        strength=strength,
        seed=seed,
        method="vepo",
        ratio=ratio,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    return premise_metrics(records, ratio), records


def format_premise(m: dict[str, Any]) -> list[str]:
    """Markdown table rows (with header) of one premise measurement."""

    def f(key: str, pct: bool = False) -> str:
        v = m.get(key)
        if not isinstance(v, (int, float)) or math.isnan(v):
            return "—"
        return f"{100 * v:.0f}%" if pct else f"{v:.3g}"

    return [
        "| | image-anchored counts | forks | copied count + answer | all but the anchored |",
        "|---|---|---|---|---|",
        (
            f"| mean entropy (nats) | {f('entropy_anchor')} | {f('entropy_fork')} | {f('entropy_derived')} | "
            f"{f('entropy_rest')} |"
        ),
        (
            f"| mean JSD clean vs perturbed image (nats) | {f('jsd_anchor')} | {f('jsd_fork')} | "
            f"{f('jsd_derived')} | {f('jsd_rest')} |"
        ),
        (
            f"| share of all tokens | {f('anchor_share_all', True)} | "
            f"{pct(_share(m.get('n_fork'), m.get('n_tokens')), 0, suffix='%', missing='—')} | — | — |"
        ),
        (
            f"| share of the entropy top-20% | {f('anchor_share_entropy_top', True)} | "
            f"{f('fork_share_entropy_top', True)} | — | — |"
        ),
        (
            f"| share of the VEPO top-20% | {f('anchor_share_vepo_top', True)} | "
            f"{f('fork_share_vepo_top', True)} | — | — |"
        ),
    ]


def _share(a: Any, b: Any) -> float | None:
    try:
        return float(a) / float(b)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
