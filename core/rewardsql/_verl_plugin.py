"""Imported by verl (entry point group ``verl.plugins``) in every process that imports verl.

verl swallows any exception raised here at debug level, so nothing may escape: a failure is
logged as a warning with its cause, and verl carries on without rewardsql's components.
"""

import logging

try:
    from rewardsql.verl_bridge import install_into_verl

    install_into_verl()
except Exception as _exc:  # report it ourselves: verl would hide it
    logging.getLogger("rewardsql.verl_bridge").warning(
        "rewardsql could not register its plugins into verl: %s: %s", type(_exc).__name__, _exc
    )
