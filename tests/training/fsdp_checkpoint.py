"""Write a real verl FSDP checkpoint of a model, as verl's trainer does, without verl's trainer.

``python fsdp_checkpoint.py MODEL_DIR RUN_DIR`` starts 2 gloo ranks on the CPU, shards MODEL_DIR
with FSDP2 (torch's ``fully_shard``, on a device mesh named as verl's engine names it), takes one
AdamW step so that the weights are no longer the model's, and saves with verl's own
``FSDPCheckpointManager`` to ``RUN_DIR/global_step_1/actor`` (one shard per rank, fsdp_config.json,
huggingface/), then writes verl's tracker file. Rank 0 also writes ``RUN_DIR/trained.pt``, the
full trained state dict, for the tests to compare an export with.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WORLD_SIZE = 2


def _rank(rank: int, model_dir: str, run_dir: str, port: int) -> None:
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
    mesh = init_device_mesh("cpu", (WORLD_SIZE,), mesh_dim_names=("fsdp",))  # as verl's engine
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = tokenizer("SELECT name FROM singer", return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    contents = OmegaConf.create({"save_contents": ["model", "optimizer", "extra"],
                                 "load_contents": ["model", "optimizer", "extra"]})
    manager = FSDPCheckpointManager(model, optimizer, None, processing_class=tokenizer,
                                    checkpoint_config=contents)
    manager.save_checkpoint(str(Path(run_dir) / "global_step_1" / "actor"), global_step=1)
    full = {name: tensor.full_tensor() for name, tensor in model.state_dict().items()}
    if rank == 0:
        torch.save(full, Path(run_dir) / "trained.pt")
        (Path(run_dir) / "latest_checkpointed_iteration.txt").write_text("1")
    dist.destroy_process_group()


def main(model_dir: str, run_dir: str) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_rank, args=(model_dir, run_dir, port), nprocs=WORLD_SIZE, join=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
