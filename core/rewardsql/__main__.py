"""``python -m rewardsql``: the same CLI as the ``rewardsql`` console script."""

from rewardsql.cli import main

main()
