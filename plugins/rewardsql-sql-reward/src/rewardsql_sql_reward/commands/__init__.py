"""The plugin's commands: ``rewardsql sql``, ``data``, ``rm label`` and ``rerank``."""
