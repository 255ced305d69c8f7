"""The math of visent: pure tensors in, tensors out (no transformers/trl imports — a test enforces it).

Shapes: B responses, T completion tokens, V vocabulary, D hidden size.
"""

from visent.core.stats import (
    DEFAULT_CHUNK_SIZE,
    TokenStats,
    entropy_from_logits,
    token_stats,
    token_stats_from_hidden,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "TokenStats",
    "entropy_from_logits",
    "token_stats",
    "token_stats_from_hidden",
]
