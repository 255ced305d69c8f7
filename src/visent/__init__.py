"""visent: token-level credit assignment for RLVR on vision-language models.

- ``visent.core``     pure-torch math (token statistics, scores, selection, losses, schedules)
- ``visent.trainer``  the TRL ``GRPOTrainer`` subclass and its config
- ``visent.rewards``  verifiable reward functions
- ``visent.data``     dataset loaders, seeded label noise, the synthetic lab tasks
- ``visent.models``   model families (adapters), loading, tiny locally-built models
- ``visent.lab``      the lab: warm-start, RL runs, ``visent demo`` / ``visent study``
- ``visent.eval``     evaluation harness
- ``visent.intervals``, ``visent.io``   shared statistics and file helpers

Layers and what may import what: docs/architecture.md.
"""

__version__ = "0.1.0"
