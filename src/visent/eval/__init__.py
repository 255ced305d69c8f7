"""Evaluation with the training verifiers: ``visent eval`` (``cli``), the resumable loop (``harness``),
generation backends (``generation``), ``--data`` specs (``sources``), and intervals/tables (``report``)."""
