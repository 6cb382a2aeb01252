#!/usr/bin/env python
"""Write CLIP's tokenizer files (vocab.json, merges.txt and their configs, as SD1.5's tokenizer/ folder
holds them) into configs/sd15/tokenizer/ and configs/sd2/tokenizer/ (the same vocabulary; OpenCLIP, SD
2.x's text encoder, pads with "!" instead of the end token), so single-file checkpoints load with no
download.

The vocabulary is derived from CLIP's byte-pair merges (bpe_simple_vocab_16e6.txt.gz, shipped in the
open_clip_torch wheel: `pip download open_clip_torch --no-deps`) exactly as CLIP's own tokenizer builds
it: the 256 byte symbols, the same with the word-end mark, the 48,894 merges, then the start and end
tokens: 49,408 entries.

    python scripts/make_clip_tokenizer.py path/to/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdgen.testing.tiny_model import _bytes_to_unicode  # noqa: E402 - CLIP's byte -> symbol table

OUTS = {ROOT / "configs" / "sd15" / "tokenizer": "<|endoftext|>", ROOT / "configs" / "sd2" / "tokenizer": "!"}
MERGES = 49152 - 256 - 2  # CLIP uses the first 48,894 merges of the file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bpe", type=Path, help="bpe_simple_vocab_16e6.txt.gz")
    args = parser.parse_args()
    with gzip.open(args.bpe) as packed:
        lines = packed.read().decode("utf-8").split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    for out, pad in OUTS.items():
        out.mkdir(parents=True, exist_ok=True)
        (out / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}, ensure_ascii=False))
        (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "pad_token": pad}
        (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
        config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                  "add_prefix_space": False, "errors": "replace"}
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    print(f"{len(vocab)} tokens, {len(merges)} merges -> " + ", ".join(str(out) for out in OUTS))


if __name__ == "__main__":
    main()
