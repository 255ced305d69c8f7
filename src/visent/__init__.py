"""visent: token-level credit assignment for RLVR on vision-language models.

- ``visent.core``     pure-torch math (token statistics, scores, selection, losses, schedules)
- ``visent.trainer``  the TRL ``GRPOTrainer`` subclass and its config
- ``visent.rewards``  verifiable reward functions
- ``visent.data``     dataset loaders and seeded label noise
- ``visent.lab``      synthetic tasks and tiny locally-built models
- ``visent.eval``     evaluation harness
"""

__version__ = "0.1.0"
