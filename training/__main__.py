"""`python -m training cache ...` and `python -m training train ...` (see --help)."""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from uniworld_core import load, umt5_conditioner
from uniworld_core.conditioning import vlm_encoder

from .cache import build_cache
from .config import ConfigError, TrainConfig
from .data import ClipDataset, read_meta
from .run import train


def _encoder(args):
    """The text encoder whose features the cache stores (the adapter is what training learns)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.umt5:
        return umt5_conditioner(args.umt5, args.tokenizer, torch.float32, device).encoder
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return vlm_encoder(args.vlm, None, args.tokenizer, dtype, device, mode=args.vlm_mode)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m training")
    sub = parser.add_subparsers(dest="command", required=True)
    cache = sub.add_parser("cache", help="encode clips once (VAE latents + prompt features)")
    cache.add_argument("--meta", required=True, help="meta JSON: [{path, cap, style?, fps?, cut?, ...}]")
    cache.add_argument("--vae", required=True)
    cache.add_argument("--vlm", help="Qwen2.5-VL folder or file (features for adapter training)")
    cache.add_argument("--vlm-mode", default="official", choices=["official", "full_vision"])
    cache.add_argument("--umt5", help="umT5 file or folder (context for FlashI2V-1.3B)")
    cache.add_argument("--tokenizer", help="tokenizer folder when the model is a single file")
    cache.add_argument("--frames", type=int, default=49)
    cache.add_argument("--fps", type=float, default=16)
    cache.add_argument("--out", required=True)
    run = sub.add_parser("train", help="train from a cache")
    run.add_argument("--config", required=True, help="JSON of TrainConfig fields")
    run.add_argument("--cache", required=True)
    run.add_argument("--dit", required=True)
    run.add_argument("--adapter", help="an adapter to start from (or to use frozen in other modes)")
    run.add_argument("--vae", help="Wan2.1 VAE, to save validation clips as video (else as latents)")
    args = parser.parse_args(argv)
    try:
        if args.command == "cache":
            if not (args.vlm or args.umt5):
                parser.error("cache needs --vlm or --umt5")
            entries, skipped = read_meta(args.meta)
            dataset = ClipDataset(entries, args.frames, args.fps)
            dataset.skipped.update(skipped)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            vae = load(args.vae, "vae", device, torch.float32).model
            print(build_cache(dataset, vae, _encoder(args), args.out))
        else:
            cfg = TrainConfig.from_file(args.config)
            print(f"exported {train(cfg, args.cache, args.dit, args.adapter, vae_path=args.vae)}")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
