"""What a token heatmap shows: one scored response per :class:`TokenRecord`.

A record is plain data (strings, lists of floats, PIL images), so the HTML renderer is a pure
function of it and tests can build records by hand without a model. ``visent.viz.scoring`` fills
records from a real model; the lab demo and ``visent inspect`` both go through it.

Signal names used by the scorer (any other name is allowed too; the renderer shows whatever is given):

==========================  ===================================================================
``entropy``                 ``H_t`` of the clean pass, nats
``entropy_perturbed``       ``H'_t`` of the perturbed pass, nats
``jsd``                     JSD between the clean and perturbed next-token distributions, nats
``kl``                      ``KL(P_t‖Q_t)``, nats
``gap``                     entropy gap ``ΔH_t = H'_t − H_t``, nats (signed)
``score:<method>``          ``visent.core.scores.token_scores`` with ``method`` (``score:vepo``…)
==========================  ===================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TokenRecord", "page_summary", "record_summary", "score_signal"]


def score_signal(method: str) -> str:
    """The signal name holding the token scores of ``method`` (a key of ``visent.core.scores.SCORES``)."""
    return f"score:{method}"


@dataclass
class TokenRecord:
    """One response with per-token signals and its selection mask.

    Attributes:
        id: example id (shown, and used in error messages).
        prompt: the user's question text (untrusted: escaped when rendered).
        tokens: the response's tokens decoded one by one, in order; ``"".join(tokens)`` is the response.
        signals: name → per-token values, each of length ``len(tokens)`` (see the module table).
        selected: per-token selection mask (the top-ρ tokens of ``selection_method``), length ``len(tokens)``.
        images: clean images as the model saw them (PIL), in prompt order.
        perturbed_images: the same images after the perturbation (PIL), same order; may be empty.
        token_ids: the token ids, when known.
        response: the decoded response; defaults to ``"".join(tokens)``.
        answer: the label the response is scored against.
        reward: the verifier's score of the response, or ``None`` when no verifier applies.
        selection_method: which score chose ``selected`` (e.g. ``"vepo"``).
        meta: free-form extras shown in the summary (task, perturbation, notes ...).
        kinds: optional per-token role from the task generator (``"anchor"``: read from the image,
            ``"fork"``: a free wording/ordering choice, ``"derived"``: copied from earlier text, ``None``:
            template); the page marks anchors and forks so they are told apart at a glance.
    """

    id: str
    prompt: str
    tokens: list[str]
    signals: dict[str, list[float]]
    selected: list[bool]
    images: list[Any] = field(default_factory=list)
    perturbed_images: list[Any] = field(default_factory=list)
    token_ids: list[int] | None = None
    response: str | None = None
    answer: str | None = None
    reward: float | None = None
    selection_method: str = "vepo"
    meta: dict[str, Any] = field(default_factory=dict)
    kinds: list[str | None] | None = None

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if self.kinds is not None and len(self.kinds) != n:
            raise ValueError(f"record {self.id!r}: kinds has {len(self.kinds)} entries but there are {n} tokens")
        for i, tok in enumerate(self.tokens):
            if not isinstance(tok, str):
                raise TypeError(f"record {self.id!r}: tokens[{i}] is {type(tok).__name__}, expected str")
        for name, values in self.signals.items():
            if len(values) != n:
                raise ValueError(
                    f"record {self.id!r}: signal {name!r} has {len(values)} values but there are {n} tokens"
                )
        if len(self.selected) != n:
            raise ValueError(f"record {self.id!r}: selected has {len(self.selected)} entries but there are {n} tokens")
        if self.token_ids is not None and len(self.token_ids) != n:
            raise ValueError(f"record {self.id!r}: token_ids has {len(self.token_ids)} entries but there are {n} tokens")
        self.signals = {k: [float(v) for v in vals] for k, vals in self.signals.items()}
        self.selected = [bool(s) for s in self.selected]
        if self.response is None:
            self.response = "".join(self.tokens)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _lower_median(values: list[float]) -> float:
    # torch.median / nanmedian return the lower of the two middle values; the trainer's
    # `select/low_entropy_fraction` uses it, so the heatmap summary matches the logged metric.
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2] if ordered else math.nan


def record_summary(record: TokenRecord) -> dict[str, float]:
    """Per-response numbers shown beside the heatmap (NaN where undefined).

    Returns:
        ``n_tokens``, ``n_selected``;
        ``jsd_selected_mean`` / ``jsd_unselected_mean``: mean JSD of selected / unselected tokens, nats;
        ``low_entropy_fraction``: share of selected tokens whose entropy is strictly below the
        response's (lower) median entropy — the trainer's ``select/low_entropy_fraction`` for one response.
    """
    sel = record.selected
    out: dict[str, float] = {"n_tokens": float(len(sel)), "n_selected": float(sum(sel))}
    jsd = record.signals.get("jsd")
    if jsd is not None:
        out["jsd_selected_mean"] = _mean([v for v, s in zip(jsd, sel) if s])
        out["jsd_unselected_mean"] = _mean([v for v, s in zip(jsd, sel) if not s])
    ent = record.signals.get("entropy")
    if ent is not None:
        median = _lower_median(ent)
        below = [float(v < median) for v, s in zip(ent, sel) if s]
        out["low_entropy_fraction"] = _mean(below)
    return out


def page_summary(records: list[TokenRecord]) -> dict[str, float]:
    """``record_summary``'s numbers pooled over the tokens of all ``records`` (NaN where undefined).

    Pooled, not averaged per response: a long response weighs by its token count, as in the trainer's
    token-level metrics.
    """
    sel_jsd, unsel_jsd, below = [], [], []
    for r in records:
        jsd = r.signals.get("jsd")
        if jsd is not None:
            sel_jsd += [v for v, s in zip(jsd, r.selected) if s]
            unsel_jsd += [v for v, s in zip(jsd, r.selected) if not s]
        ent = r.signals.get("entropy")
        if ent is not None:
            median = _lower_median(ent)
            below += [float(v < median) for v, s in zip(ent, r.selected) if s]
    return {
        "n_responses": float(len(records)),
        "n_tokens": float(sum(len(r.tokens) for r in records)),
        "n_selected": float(sum(sum(r.selected) for r in records)),
        "jsd_selected_mean": _mean(sel_jsd),
        "jsd_unselected_mean": _mean(unsel_jsd),
        "low_entropy_fraction": _mean(below),
    }
