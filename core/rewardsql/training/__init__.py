"""The training wing: the verl launcher (``rewardsql train``), the local single-machine GRPO
engine, supervised fine-tuning (``rewardsql sft``), reproducible CPU arithmetic and environment
records. It builds on the core (:mod:`rewardsql`) and is imported by nothing in it.
"""
