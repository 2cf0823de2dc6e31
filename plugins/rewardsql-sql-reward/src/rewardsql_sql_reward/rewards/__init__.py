"""Rewards built on the verifier: the ``sql_execution`` reward function (``reward_fn``), the
``sql_verifier`` outcome manager (``verifier_manager``) and the ``sql_prm`` process manager
(``prm_manager``), with Chain-of-CTEs steps (``cocte``) and their annotation for the PRM
(``annotate``)."""
