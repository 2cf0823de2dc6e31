"""Write a real verl FSDP checkpoint of a model, as verl's trainer does, without verl's trainer.

``python fsdp_checkpoint.py MODEL_DIR RUN_DIR [--lora]`` starts 2 gloo ranks on the CPU, shards
MODEL_DIR with FSDP2 (torch's ``fully_shard``, on a device mesh named as verl's engine names it),
takes one AdamW step so that the weights are no longer the model's, and saves with verl's own
``FSDPCheckpointManager`` to ``RUN_DIR/global_step_1/actor`` (one shard per rank, fsdp_config.json,
huggingface/), then writes verl's tracker file. Rank 0 also writes ``RUN_DIR/trained.pt``, the
full trained state dict under the model's own names, for the tests to compare an export with.
With ``--lora`` the actor is the model with a peft LoRA adapter (r 4, alpha 8, on q_proj and
v_proj), as verl wraps it for ``actor_rollout_ref.model.lora_rank``; ``trained.pt`` then holds
the weights with the adapter folded in, W + B @ A x alpha / r, computed here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

WORLD_SIZE = 2
LORA_R, LORA_ALPHA = 4, 8


def _folded(state: dict, torch: Any) -> dict:
    """A peft LoRA model's state dict as the plain model's, each adapter folded in."""
    out = {}
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        if name.endswith(".base_layer.weight"):
            stem = name.removesuffix(".base_layer.weight")
            a, b = state[f"{stem}.lora_A.default.weight"], state[f"{stem}.lora_B.default.weight"]
            tensor = tensor + (b @ a) * (LORA_ALPHA / LORA_R)
        out[plain] = tensor
    return out


def _rank(rank: int, model_dir: str, run_dir: str, port: int, lora: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD_SIZE))
    import torch
    import torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    layers = model.model.layers
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM"))
        with torch.no_grad():  # B starts at zero: one step would leave B @ A tiny
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    mesh = init_device_mesh("cpu", (WORLD_SIZE,), mesh_dim_names=("fsdp",))  # as verl's engine
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = tokenizer("SELECT name FROM singer", return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    contents = OmegaConf.create({"save_contents": ["model", "optimizer", "extra"],
                                 "load_contents": ["model", "optimizer", "extra"]})
    manager = FSDPCheckpointManager(model, optimizer, None, processing_class=tokenizer,
                                    checkpoint_config=contents)
    manager.save_checkpoint(str(Path(run_dir) / "global_step_1" / "actor"), global_step=1)
    full = {name: tensor.full_tensor() for name, tensor in model.state_dict().items()}
    if lora:
        full = _folded(full, torch)
    if rank == 0:
        torch.save(full, Path(run_dir) / "trained.pt")
        (Path(run_dir) / "latest_checkpointed_iteration.txt").write_text("1")
    dist.destroy_process_group()


def main(model_dir: str, run_dir: str, lora: bool = False) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(model_dir, run_dir, port, lora), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], lora="--lora" in sys.argv[3:])
