"""Imported by verl (entry point group ``verl.plugins``) in every process that imports verl.

verl swallows any exception raised here at debug level, so nothing may escape: a failure is
logged as a warning with its cause, and verl carries on without rewardsql's components.

With ``REWARDSQL_VERL_CPU=1`` (set by ``rewardsql train --engine verl --device cpu``) it first
installs the training wing's CPU platform for verl, found by name so that the core does not depend
on the wing; a failure there stops the process with its message, since verl would otherwise hang
or fail far from the cause.
"""

import importlib
import logging
import os

if os.environ.get("REWARDSQL_VERL_CPU") == "1":
    try:
        importlib.import_module("rewardsql.training.verl_cpu").install()
    except Exception as _exc:
        raise SystemExit(f"error: {_exc}") from None

try:
    from rewardsql.verl_bridge import install_into_verl

    install_into_verl()
except Exception as _exc:  # report it ourselves: verl would hide it
    logging.getLogger("rewardsql.verl_bridge").warning(
        "rewardsql could not register its plugins into verl: %s: %s", type(_exc).__name__, _exc
    )
