"""Response variants around a label, for checking the authors' reward against ``mathruler`` (test helper)."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "authors_math_cases.jsonl"


def variants(label: str) -> list[str]:
    """Responses a policy might write for ``label``: right, reformatted, wrapped, wrong, malformed."""
    think = "<think>Let me look at the figure. {x} is what I get.</think>"
    body = [
        f"\\boxed{{{label}}}",
        f"The answer is \\boxed{{ {label} }}.",
        f"\\boxed{{{label}.}}",
        f"\\boxed{{\\text{{{label}}}}}",
        f"\\boxed{{${label}$}}",
        f"\\boxed{{x = {label}}}",
        f"\\boxed{{{label} cm}}",
        f"\\boxed{{{label}^\\circ}}",
        f"\\boxed{{{label}\\%}}",
        f"\\boxed{{\\frac{{2\\cdot {label}}}{{2}}}}",
        f"\\boxed{{({label})}}",
        f"\\boxed{{{label}}} and then \\boxed{{7}}",
        f"\\boxed{{7}} but finally \\boxed{{{label}}}",
        f"\\boxed{{{label}",
        f"<answer>{label}</answer>",
        f"so it is {label}",
        f"\\boxed{{{label}1}}",
        f"\\boxed{{-{label}}}",
        "\\boxed{}",
        "\\boxed{None}",
    ]
    out = []
    for i, b in enumerate(body):
        out.append(think.format(x=label) + " " + b)
        if i % 4 == 0:
            out.append(b)  # no thinking: format 0
            out.append(" " + think.format(x=label) + b)  # leading space: the regex must fail
    return out


def load_cases() -> list[dict]:
    """The committed cases: ``{"response", "label", "score"}`` with ``score`` from the authors' own code."""
    return [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
