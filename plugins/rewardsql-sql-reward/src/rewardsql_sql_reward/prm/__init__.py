"""Tools around the process reward model: step labels (``label``), best-of-N reranking
(``rerank``) and the policy that samples candidates for both (``policy``)."""
