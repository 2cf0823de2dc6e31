"""Round trip through the real verl: its registry and its trainer's ``compute_advantage``.

Runs in a fresh interpreter, as every verl process does: importing verl must be enough for
``algorithm.adv_estimator=<name>`` to find our functions (rewardsql's ``verl.plugins`` entry
point registers them); nothing here imports rewardsql_advantages before the lookups.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys, uuid
    import numpy as np
    import torch
    import verl
    from verl.trainer.ppo import core_algos

    PUBLISHED = {
        "grpo_process_avg_unique": "compute_grpo_process_advantage_avg_unique",
        "grpo_weighted": "compute_weighted_grpo_advantage",
        "grpo_token_wise": "compute_token_wise_advantage",
        "grpo_min_form": "compute_grpo_min_form_advantage",
        "grpo_process_fallback": "compute_grpo_process_fallback_advantage",
    }
    looked_up = {}
    for name, alias in PUBLISHED.items():
        for label in (name, alias):
            looked_up[label] = core_algos.get_adv_estimator_fn(label)

    import rewardsql_advantages as ra  # only now, to compare identities

    result = {"identity": {}, "direct_vs_registry": {}, "compute_advantage": {}}
    for name, alias in PUBLISHED.items():
        ours = getattr(ra, alias)
        for label in (name, alias):
            fn = looked_up[label]
            result["identity"][label] = [fn is ours, fn.__module__, fn.__qualname__]

    # a verl-shaped batch: 6 prompts x 4 rollouts, uid strings, int64 response mask
    gen = torch.Generator().manual_seed(0)
    n_prompts, n, width = 6, 4, 24
    rewards = torch.rand(n_prompts * n, width, generator=gen).round(decimals=1)
    rewards *= torch.rand(n_prompts * n, width, generator=gen) < 0.3
    lengths = torch.randint(1, width + 1, (n_prompts * n,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    rewards[torch.arange(n_prompts * n), lengths - 1] += 1.0
    uids = np.array([str(uuid.UUID(int=i)) for i in range(n_prompts) for _ in range(n)],
                    dtype=object)

    from verl.trainer.config import AlgoConfig
    algo_config = AlgoConfig()
    for name, alias in PUBLISHED.items():
        direct, _ = getattr(ra, alias)(rewards, mask, uids)
        via, returns = looked_up[name](token_level_rewards=rewards, response_mask=mask,
                                       config=algo_config, index=uids)
        result["direct_vs_registry"][name] = [torch.equal(via, direct), returns is via,
                                              bool(direct.abs().sum() > 0)]

    # verl's own trainer step, with its DataProto and an OmegaConf algorithm section that
    # carries our extra keys the way `+algorithm.weight_factor=0.2` would
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    for name, alias in PUBLISHED.items():
        config = OmegaConf.create({"adv_estimator": name, "gamma": 1.0, "lam": 1.0,
                                   "norm_adv_by_std_in_grpo": True, "weight_factor": 0.2,
                                   "epsilon": 1e-4})
        data = DataProto.from_dict(
            tensors={"token_level_rewards": rewards.clone(), "response_mask": mask.clone()},
            non_tensors={"uid": uids.copy()},
        )
        data = compute_advantage(data, adv_estimator=name, config=config)
        kwargs = {"epsilon": 1e-4}
        if name in ("grpo_weighted", "grpo_process_fallback"):  # the two that read it
            kwargs["weight_factor"] = 0.2
        want, _ = getattr(ra, alias)(rewards, mask, uids, **kwargs)
        default, _ = getattr(ra, alias)(rewards, mask, uids)
        result["compute_advantage"][name] = [
            torch.equal(data.batch["advantages"], want),
            torch.equal(data.batch["returns"], want),
            not torch.equal(want, default),  # the config keys made a difference
        ]
    print("RESULT " + json.dumps(result))
    """
)


@pytest.mark.slow
def test_verl_registry_and_compute_advantage_use_our_functions() -> None:
    # verl is optional for this plugin (the project's CI installs rewardsql[verl]); look for it
    # without importing it here, which would load every verl plugin into the test process
    if importlib.util.find_spec("verl") is None:
        pytest.skip("verl is not installed (pip install 'rewardsql[verl]')")
    env = {k: v for k, v in os.environ.items() if k not in ("REWARDSQL_PLUGINS",)}
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)  # verl's default: load every plugin
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])

    assert len(result["identity"]) == 10  # five names, five aliases
    for label, (same, module, qualname) in result["identity"].items():
        assert same, f"{label} resolves to {module}.{qualname}"
        assert module.startswith("rewardsql_advantages.")
    for name, checks in result["direct_vs_registry"].items():
        assert checks == [True, True, True], name
    for name, checks in result["compute_advantage"].items():
        assert checks == [True, True, True], name
