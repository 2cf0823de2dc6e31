"""Data preparation: prompts for Chain-of-CTEs SQL and conversion to verl's RL parquet."""
