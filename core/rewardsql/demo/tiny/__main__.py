"""``python -m rewardsql.demo.tiny --output-dir DIR [--quick] [--seed N]``: example and model.

Writes ``DIR/example`` (databases, questions, RL and SFT files) and ``DIR/model`` (tokenizer and
tiny Qwen2 model), the paths ``rewardsql/tiny/configs/sft_config.json`` expects under ``runs/tiny``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rewardsql.demo.tiny import build_example, build_tiny_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rewardsql.demo.tiny", description=__doc__)
    parser.add_argument("--output-dir", type=Path, default=Path("runs/tiny"))
    parser.add_argument("--quick", action="store_true", help="the CI-sized question set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="tiny", help="model size: tiny or small")
    args = parser.parse_args(argv)
    started = time.monotonic()
    example = build_example(args.output_dir / "example", seed=args.seed,
                            scale="quick" if args.quick else "full")
    model = build_tiny_model(args.output_dir / "model", example.corpus(), seed=args.seed,
                             size=args.size)
    counts = f"{example.n_train} train / {example.n_rl} rl / {example.n_dev} dev questions"
    print(f"example: {example.out_dir} ({counts}, databases in {example.db_root})")
    print(f"model:   {model}")
    print(f"seconds: {time.monotonic() - started:.1f}")


if __name__ == "__main__":
    main()
