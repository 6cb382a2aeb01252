#!/usr/bin/env python
"""Check that a change left the pictures alone: run the same sdgen commands with an earlier revision and
with the working tree, on the tiny test model, and compare every image's pixels and metadata.

    python scripts/same_pictures.py HEAD~3          # exit 0: every image byte-identical in pixels

Covers text-to-image (bfloat16/auto and float32, two schedulers, a batched U-Net call), image-to-image and
`sdgen batch` with mixed prompts. The earlier revision is checked out into a temporary git worktree and
run with the same Python (its sdgen found first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ["-W", "64", "-H", "64", "--steps", "3", "--device", "cpu"]
COMMANDS = {
    "t2i-auto": ["a red fox", *TINY, "--seed", "5", "-n", "2", "--batch-size", "2", "-o", "{out}/"],
    "t2i-fp32": ["an owl", *TINY, "--seed", "9", "--dtype", "float32", "--scheduler", "euler-a", "-o", "{out}/"],
    "img2img": ["a painting", *TINY, "--seed", "3", "--init-image", "{init}", "--strength", "0.6", "-o", "{out}/"],
    "batch": ["batch", "{prompts}", *TINY, "--batch-size", "2", "-o", "{out}/"],
}
PROMPTS = [{"prompt": "a fox"}, {"prompt": "an owl", "seed": 4}, {"prompt": "a cat", "negative_prompt": "dull"}]


def run_all(tree: Path, work: Path, model: Path, init: Path, prompts: Path) -> dict[str, Path]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "SDGEN_CONFIG": str(work / "none.toml")}
    work.mkdir(parents=True, exist_ok=True)
    folders = {}
    for name, args in COMMANDS.items():
        out = work / name
        filled = [a.format(out=out, init=init, prompts=prompts) for a in args]
        subprocess.run(
            [sys.executable, "-m", "sdgen", *filled, "--model", str(model), "-q"],
            env=env,
            check=True,
            cwd=work,
            stdout=subprocess.DEVNULL,
        )
        folders[name] = out
    return folders


def pictures(folder: Path) -> dict[str, tuple[bytes, dict, bytes]]:
    """name -> (pixels, text chunks, file bytes)"""
    from PIL import Image

    found = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            found[path.name] = (image.tobytes(), dict(image.text), path.read_bytes())
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the earlier git revision to compare with, e.g. HEAD~1")
    args = parser.parse_args()
    from PIL import Image

    sys.path.insert(0, str(ROOT))
    from sdgen.testing.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="sdgen-same-") as temp:
        temp_path = Path(temp)
        model = build_tiny_model(temp_path / "tiny", fp16_variant=True)
        init = temp_path / "init.png"
        Image.effect_noise((64, 64), 60).convert("RGB").save(init)
        prompts = temp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
        old_tree = temp_path / "old-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.revision], cwd=ROOT, check=True)
        try:
            before = run_all(old_tree, (temp_path / "before"), model, init, prompts)
            after = run_all(ROOT, (temp_path / "after"), model, init, prompts)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=True)
        failures = 0
        for name in COMMANDS:
            old, new = pictures(before[name]), pictures(after[name])
            same_pixels = old.keys() == new.keys() and all(old[k][0] == new[k][0] for k in old)
            same_text = old.keys() == new.keys() and all(old[k][1] == new[k][1] for k in old)
            same_files = old.keys() == new.keys() and all(old[k][2] == new[k][2] for k in old)
            print(
                f"{name:10} {len(new)} images  pixels {'identical' if same_pixels else 'DIFFER'}  "
                f"metadata {'identical' if same_text else 'differs'}  files {'identical' if same_files else 'differ'}"
            )
            failures += not same_pixels
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
