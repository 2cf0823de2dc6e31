"""Data: Spider/BIRD questions to verl's parquet (``prepare``), the prompts (``prompts``) and
prediction files in Spider's and BIRD's formats (``evalfiles``)."""
