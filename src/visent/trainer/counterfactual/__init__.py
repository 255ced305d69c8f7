"""The counterfactual pass (METHOD §2): per-token statistics of the sampled responses under the clean and a
perturbed image, with no gradient.

Modules, each one job, data flowing down the list:

- ``units``: a generation batch's images as one unit per image (cut and joined by the model's adapter)
  and the model inputs of some responses;
- ``grouping``: responses that share a prompt (``prompt_groups``), a perturbation seed (``prompt_seeds``)
  or their whole statistics (``distinct_responses``);
- ``images``: perturbed images drawn once per prompt (``perturb_images``) and vision-encoder outputs
  computed once per distinct image (``VisionCache``);
- ``forward``: the model calls (plain, or each prompt once with its responses against its cache);
- ``stats``: the pass itself (``counterfactual_stats``) and its cost decisions; its perturbed half reduced
  to the sampled tokens' log-probs (``perturbed_token_logps``, VPPO's and PAPO's perception pass).

Nothing here reads a family's layout: the model's adapter (``visent.models.adapters``) cuts and joins
image inputs, perturbs them, encodes them, and owns the family's mechanics behind hooks (rope positions
and their layout, decoder-cache copy and reorder). A model without an adapter is refused.
"""

from visent.trainer.counterfactual.forward import completion_hidden, length_parts
from visent.trainer.counterfactual.grouping import distinct_responses, prompt_groups, prompt_seeds
from visent.trainer.counterfactual.images import accepts_encoder_outputs, perturb_batch_images, perturb_images
from visent.trainer.counterfactual.stats import (
    COUNTERFACTUAL_FORWARDS,
    counterfactual_stats,
    lockstep_forwards,
    perturbed_token_logps,
)
from visent.trainer.counterfactual.units import BatchImages, Pixels, row_inputs

__all__ = [
    "COUNTERFACTUAL_FORWARDS",
    "BatchImages",
    "Pixels",
    "accepts_encoder_outputs",
    "completion_hidden",
    "counterfactual_stats",
    "distinct_responses",
    "length_parts",
    "lockstep_forwards",
    "perturb_batch_images",
    "perturb_images",
    "perturbed_token_logps",
    "prompt_groups",
    "prompt_seeds",
    "row_inputs",
]
