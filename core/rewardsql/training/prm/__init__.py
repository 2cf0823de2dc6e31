"""The process reward model (PRM): step-tagged text, "+"/"-" candidates, any tokenizer.

:mod:`~rewardsql.training.prm.encode` builds token ids segment by segment,
:class:`~rewardsql.training.prm.scorer.PRMScorer` scores candidates' steps in batches (or
:class:`~rewardsql.training.prm.served.ServedPRMScorer` on a vLLM server), and
:mod:`~rewardsql.training.prm.trainer` trains a PRM (``rewardsql rm train``). Nothing here
imports torch or transformers until it is used.
"""

from rewardsql.training.prm.encode import (
    DEFAULT_CANDIDATES,
    DEFAULT_TAG,
    Encoded,
    TagTokens,
    encode,
    split_tagged,
    tag_tokens,
)
from rewardsql.training.prm.scorer import (
    AGGREGATIONS,
    PRM_CONFIG_FILE,
    SCORING,
    PRMScorer,
    StepScorer,
    aggregate,
    models_loaded,
    open_scorer,
)
from rewardsql.training.prm.served import DEFAULT_RETRIES, DEFAULT_TIMEOUT, PRMServerError

__all__ = ["AGGREGATIONS", "DEFAULT_CANDIDATES", "DEFAULT_RETRIES", "DEFAULT_TAG",
           "DEFAULT_TIMEOUT", "PRM_CONFIG_FILE", "SCORING", "Encoded", "PRMScorer",
           "PRMServerError", "StepScorer", "TagTokens", "aggregate", "encode", "models_loaded",
           "open_scorer", "split_tagged", "tag_tokens"]
