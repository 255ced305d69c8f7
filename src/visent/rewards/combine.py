"""Weighted sums of rewards, e.g. VEPO's ``0.9·accuracy + 0.1·format``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from visent.rewards.base import Reward, RewardResult


def weighted(terms: Mapping[Reward, float] | list[tuple[Reward, float]], name: str, doc: str = "") -> Reward:
    """``Σ_i w_i · reward_i`` as one :class:`Reward` named ``name``.

    Components are the terms' scores keyed by their names (``{"math": 1.0, "boxed_format": 0.0}``)
    plus each term's own components as ``"<term>/<component>"``. ``parse_failed`` is that of the
    highest-weight term (the accuracy term, for the usual accuracy + format mixes); ``label_error`` if
    any term had one. The range is ``[Σ min(w·low, w·high), Σ max(w·low, w·high)]``.
    """
    items = list(terms.items()) if isinstance(terms, Mapping) else list(terms)
    if not items:
        raise ValueError(f"weighted reward {name!r} needs at least one term")
    names = [r.name for r, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"weighted reward {name!r} has repeated terms: {names}")
    primary = max(range(len(items)), key=lambda k: abs(items[k][1]))
    low = sum(min(w * r.low, w * r.high) for r, w in items)
    high = sum(max(w * r.low, w * r.high) for r, w in items)

    score = WeightedScore(items, primary)
    formula = " + ".join(f"{w:g}·{r.name}" for r, w in items)
    reward = Reward(name, score, low=low, high=high, doc=doc or formula)
    # The terms by name, so that a reward can be given to the trainer as separate functions with weights
    # (``reward_funcs`` + ``reward_weights``: the same total), e.g. to filter groups on the accuracy term
    # alone as EasyR1's dynamic sampling does; ``accuracy_term`` is the highest-weight term.
    reward.terms = [(r.name, float(w)) for r, w in items]
    reward.accuracy_term = items[primary][0].name
    return reward


class WeightedScore:
    """The per-row scorer of :func:`weighted` (a class rather than a closure so rewards pickle)."""

    def __init__(self, items: list[tuple[Reward, float]], primary: int) -> None:
        self.items, self.primary = items, primary

    def __call__(self, text: str, answer: Any = None, **row: Any) -> RewardResult:
        results = [reward._safe(text, answer, row) for reward, _ in self.items]
        components: dict[str, float] = {}
        total = 0.0
        for (reward, weight), result in zip(self.items, results):
            total += weight * result.score
            components[reward.name] = result.score
            for key, value in result.components.items():
                components[f"{reward.name}/{key}"] = value
        main = results[self.primary]
        return RewardResult(
            total,
            main.parsed,
            components,
            parse_failed=main.parse_failed,
            label_error=any(r.label_error for r in results),
        )
