"""The math of visent: pure tensors in, tensors out (no transformers/trl imports — a test enforces it).

Shapes: B responses, T completion tokens, V vocabulary, D hidden size.

- ``stats``        entropy, perturbed entropy, JSD, KL per token, chunked (from logits or hidden states)
- ``scores``       VEPO score and its ablations (``SCORES``)
- ``selection``    top/bottom/random-ρ token masks per response or per batch
- ``advantages``   group-relative advantages
- ``policy_loss``  clipped surrogate with a token mask, k3 KL, aggregation modes (``AGGREGATIONS``)
- ``schedules``    entropy-coefficient schedules (``SCHEDULES``); a positive coefficient raises entropy

Perception-aware baselines (docs: ``../shared/docs/BASELINES.md``; each cites the authors' code it follows):

- ``kl_scores``                sampled-token k3 KL; VPPO's per-token perception score
- ``trajectory_shaping``       VPPO's trajectory advantage scale α_i
- ``perception_loss``          PAPO's implicit perception loss and double entropy, VPPO's entropy penalty,
                               CPPO's contrastive perception loss
- ``entropy_shift_selection``  CPPO's entropy-shift token mask, gated by positive advantage
- ``dynamic_sampling``         DAPO's group filters (EasyR1's mean rule, verl's std rule)
"""

from visent.core.advantages import REWARD_SCALES, group_advantages, zero_variance_groups
from visent.core.policy_loss import AGGREGATIONS, entropy_regularizer, policy_loss
from visent.core.schedules import (
    DEFAULT_COEF_MAX,
    DEFAULT_COEF_MIN,
    DEFAULT_SWITCH,
    SCHEDULES,
    entropy_coef,
    entropy_stage,
)
from visent.core.scores import SCORES, minmax_per_response, token_scores
from visent.core.selection import GRANULARITIES, MODES, keep_count, select_tokens
from visent.core.stats import (
    DEFAULT_CHUNK_SIZE,
    TokenStats,
    entropy_from_logits,
    token_stats,
    token_stats_from_hidden,
)

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_COEF_MAX",
    "DEFAULT_COEF_MIN",
    "DEFAULT_SWITCH",
    "GRANULARITIES",
    "MODES",
    "REWARD_SCALES",
    "SCHEDULES",
    "SCORES",
    "TokenStats",
    "entropy_coef",
    "entropy_from_logits",
    "entropy_regularizer",
    "entropy_stage",
    "group_advantages",
    "keep_count",
    "minmax_per_response",
    "policy_loss",
    "select_tokens",
    "token_scores",
    "token_stats",
    "token_stats_from_hidden",
    "zero_variance_groups",
]
