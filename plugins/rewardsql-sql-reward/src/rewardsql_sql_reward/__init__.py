"""rewardsql-sql-reward: a safe, fast SQL execution verifier and the SQL rewards built on it.

Layout, one folder per concern: ``verifier/`` (sandboxed execution and comparison),
``rewards/`` (reward function, the ``sql_verifier`` and ``sql_prm`` managers, CoCTE steps),
``prm/`` (step labels, reranking, the sampling policy), ``data/`` (prepare, prompts, prediction
files), ``commands/`` (the CLI). The flat module paths of 0.1 (``rewardsql_sql_reward.reward_fn``,
which verl configs load as ``pkg://``, ``.cocte``, ``.manager``, ...) still import, as aliases of
the moved modules, for one release.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from rewardsql_sql_reward.rewards import cocte
from rewardsql_sql_reward.rewards.cocte import (
    STEP_TAG,
    execute_steps,
    execute_steps_batch,
    split_steps,
)
from rewardsql_sql_reward.verifier import (
    MODES,
    STATUSES,
    ExecResult,
    SQLVerifier,
    Verdict,
    resolve_db_path,
    shared_verifier,
)
from rewardsql_sql_reward.verifier.extract import extract_sql

#: 0.1's flat module names -> their modules now. Deprecated; removed in 0.3.
MOVED_MODULES = {
    "annotate": "rewards.annotate", "budget": "verifier.budget", "cocte": "rewards.cocte",
    "data_command": "commands.data", "evalfiles": "data.evalfiles", "extract": "verifier.extract",
    "label": "prm.label", "label_command": "commands.label", "manager": "rewards.verifier_manager",
    "policy": "prm.policy", "prepare": "data.prepare", "prm_manager": "rewards.prm_manager",
    "prompts": "data.prompts", "rerank": "prm.rerank", "rerank_command": "commands.rerank",
    "reward_fn": "rewards.reward_fn", "sql_command": "commands.sql",
    "_pool": "verifier.pool", "_sqltext": "verifier.sqltext", "_worker": "verifier._worker",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old flat path as the moved module itself (one module object, not a copy), so
    ``pkg://rewardsql_sql_reward.reward_fn`` in a verl config and old imports keep working."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        name = spec.name.rpartition(".")[2]
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[name]}")

    def exec_module(self, module: ModuleType) -> None:
        """The moved module ran when it was imported; nothing more to do."""


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())

__all__ = [
    "MODES",
    "MOVED_MODULES",
    "STATUSES",
    "STEP_TAG",
    "ExecResult",
    "SQLVerifier",
    "Verdict",
    "cocte",
    "execute_steps",
    "execute_steps_batch",
    "extract_sql",
    "resolve_db_path",
    "shared_verifier",
    "split_steps",
]
