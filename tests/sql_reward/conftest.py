"""Cross-package tests of the SQL plugin's commands (``rewardsql sql``, ``rewardsql data``) run
through rewardsql's CLI; the plugin's own tests are in plugins/rewardsql-sql-reward/tests."""
