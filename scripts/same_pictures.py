#!/usr/bin/env python
"""Check that a change left the pictures alone: run the same sdgen commands with an earlier revision and
with the working tree, on the tiny test model, and compare every image's pixels and metadata.

    python scripts/same_pictures.py HEAD~3          # exit 0: every image byte-identical in pixels

Covers text-to-image (bfloat16/auto and float32, two schedulers, a batched U-Net call), image-to-image,
inpainting (a 4-channel and a 9-channel model), the hires pass (latent and lanczos), a LoRA, embeddings,
clip skip and emphasis, --cache-interval and --cfg-end, --token-merging (where tomesd is installed),
--decoder, `sdgen batch` with plain and mixed lines, `sdgen grid`, and a batch resumed after a crash
(its last image and record gone), once by each tree and once by the working tree on the folder the earlier
revision left. The earlier revision is checked out into a temporary git worktree and run with the same
Python (its sdgen found first on PYTHONPATH). Manifests are compared too, record by record, without the
seconds each image took.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
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
    "inpaint": ["a cat", *TINY, "--seed", "4", "--init-image", "{init}", "--mask", "{mask}", "--mask-blur", "2",
                "-o", "{out}/"],
    "inpaint-9ch": ["a cat", *TINY, "--seed", "4", "--init-image", "{init}", "--mask", "{mask}", "--invert-mask",
                    "--model", "{inpainting_model}", "-o", "{out}/"],
    "hires": ["a castle", *TINY, "--seed", "2", "--hires-scale", "1.5", "--hires-steps", "2", "-o", "{out}/"],
    "hires-lanczos": ["a castle", *TINY, "--seed", "2", "--hires-scale", "1.25", "--hires-upscaler", "lanczos",
                      "--hires-strength", "0.5", "-o", "{out}/"],
    "prompts": ["a mystyle fox <lora:detail:0.7>, (snow:1.3)", *TINY, "--seed", "6", "--clip-skip", "2",
                "--lora-dir", "{loras}", "--embedding", "{embedding}", "-N", "blurry", "-o", "{out}/"],
    "savers": ["a tree", *TINY, "--steps", "4", "--seed", "8", "--cache-interval", "2", "--cfg-end", "0.5",
               "-o", "{out}/"],
    "decoder": ["a boat", *TINY, "--seed", "1", "--decoder", "{decoder}", "-o", "{out}/"],
    "batch-mixed": ["batch", "{mixed}", *TINY, "--batch-size", "3", "-o", "{out}/"],
    "grid": ["grid", "a fox", *TINY, "--seed", "3", "--x", "steps=2,3", "--y", "guidance-scale=1,7.5",
             "-o", "{out}/grid.png"],
}
if importlib.util.find_spec("tomesd") is not None:
    COMMANDS["token-merging"] = ["a bird", *TINY, "--seed", "7", "--token-merging", "0.5", "-o", "{out}/"]
RESUME = "batch-resumed"  # batch-mixed again, after a crash took its last image and record
PROMPTS = [{"prompt": "a fox"}, {"prompt": "an owl", "seed": 4}, {"prompt": "a cat", "negative_prompt": "dull"}]
MIXED = [
    {"prompt": "a fox", "seed": 1},
    {"prompt": "a fox in the rain", "seed": 2, "clip_skip": 2},  # shares the fox's U-Net call
    {"prompt": "an owl", "seed": 3, "hires_scale": 1.5},
    {"prompt": "a cat", "init_image": "{init}", "mask": "{mask}", "strength": 0.7},
    {"prompt": "a cat", "init_image": "{init}", "strength": 0.5, "num_images": 2},
    {"prompt": "a tree", "steps": 4, "cache_interval": 2, "cfg_end": 0.5},
    {"prompt": "a detailed boat", "lora": ["{lora}:0.8"], "weighting": False},
]


def make_inputs(temp: Path) -> dict[str, Path]:
    """The tiny models, an init image and a mask, LoRAs, embeddings, TAESD, the batch files."""
    import numpy as np
    from PIL import Image

    from sdgen.testing.tiny_adapters import build_tiny_embedding, build_tiny_lora
    from sdgen.testing.tiny_model import build_tiny_autoencoder, build_tiny_model

    paths = {"model": build_tiny_model(temp / "tiny", fp16_variant=True)}
    paths["inpainting_model"] = build_tiny_model(temp / "tiny-inpainting", in_channels=9)
    paths["init"] = temp / "init.png"
    Image.effect_noise((64, 64), 60).convert("RGB").save(paths["init"])
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:44] = 255
    paths["mask"] = temp / "mask.png"
    Image.fromarray(mask).save(paths["mask"])
    paths["loras"] = temp / "loras"
    paths["lora"] = paths["loras"] / "detail.safetensors"
    build_tiny_lora(paths["model"], paths["lora"])
    paths["embedding"] = temp / "mystyle.pt"
    build_tiny_embedding(paths["model"], paths["embedding"], seed=2)
    paths["decoder"] = build_tiny_autoencoder(temp / "taesd")
    for name, lines in (("prompts", PROMPTS), ("mixed", MIXED)):
        paths[name] = temp / f"{name}.jsonl"
        text = "".join(json.dumps(line) + "\n" for line in lines)
        paths[name].write_text(text.replace("{init}", str(paths["init"])).replace("{mask}", str(paths["mask"]))
                               .replace("{lora}", str(paths["lora"])))
    return paths


def run_sdgen(tree: Path, work: Path, args: list[str], paths: dict[str, Path], out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "SDGEN_CONFIG": str(work / "none.toml")}
    filled = [a.format(out=out, **paths) for a in args]
    if "--model" not in filled:
        filled += ["--model", str(paths["model"])]
    subprocess.run([sys.executable, "-m", "sdgen", *filled, "-q"], env=env, check=True, cwd=work,
                   stdout=subprocess.DEVNULL)


def crash(folder: Path) -> None:
    """What a crash before the last image was written leaves: no file, no record."""
    manifest = folder / "manifest.jsonl"
    records = manifest.read_text().splitlines()
    Path(json.loads(records[-1])["path"]).unlink()
    manifest.write_text("".join(line + "\n" for line in records[:-1]))


def copy_batch(source: Path, target: Path) -> None:
    """A batch folder somewhere else, its manifest's paths moved with it (as if it had been made there)."""
    shutil.copytree(source, target)
    manifest = target / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace(json.dumps(str(source))[1:-1], json.dumps(str(target))[1:-1]))


def run_all(tree: Path, work: Path, paths: dict[str, Path]) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    folders = {}
    for name, args in COMMANDS.items():
        folders[name] = work / name
        run_sdgen(tree, work, args, paths, folders[name])
    folders[RESUME] = work / RESUME
    run_sdgen(tree, work, COMMANDS["batch-mixed"], paths, folders[RESUME])
    crash(folders[RESUME])
    copy_batch(folders[RESUME], work / "crashed")  # for the working tree to resume, later
    run_sdgen(tree, work, COMMANDS["batch-mixed"], paths, folders[RESUME])
    return folders


def pictures(folder: Path) -> dict[str, tuple[bytes, dict, bytes]]:
    """name -> (pixels, text chunks, file bytes)"""
    from PIL import Image

    found = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            found[path.name] = (image.tobytes(), dict(image.text), path.read_bytes())
    return found


def manifest(folder: Path) -> list[dict]:
    """The manifest's records without the seconds each image took; paths relative to the folder."""
    path = folder / "manifest.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: (Path(v).name if k == "path" else v) for k, v in r.items() if k != "seconds"} for r in records]


def compare(name: str, old_folder: Path, new_folder: Path) -> bool:
    old, new = pictures(old_folder), pictures(new_folder)
    same_pixels = old.keys() == new.keys() and all(old[k][0] == new[k][0] for k in old)
    same_text = old.keys() == new.keys() and all(old[k][1] == new[k][1] for k in old)
    same_files = old.keys() == new.keys() and all(old[k][2] == new[k][2] for k in old)
    same_manifest = manifest(old_folder) == manifest(new_folder)
    print(
        f"{name:14} {len(new)} images  pixels {'identical' if same_pixels else 'DIFFER'}  "
        f"metadata {'identical' if same_text else 'DIFFERS'}  files {'identical' if same_files else 'differ'}  "
        f"manifest {'identical' if same_manifest else 'DIFFERS'}"
    )
    return same_pixels and same_text and same_manifest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("revision", help="the earlier git revision to compare with, e.g. HEAD~1")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory(prefix="sdgen-same-") as temp:
        temp_path = Path(temp)
        paths = make_inputs(temp_path)
        old_tree = temp_path / "old-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.revision], cwd=ROOT, check=True)
        try:
            before = run_all(old_tree, (temp_path / "before"), paths)
            after = run_all(ROOT, (temp_path / "after"), paths)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=True)
        cross = temp_path / "after" / "resumed-from-before"  # the earlier revision's crashed batch, resumed now
        copy_batch(temp_path / "before" / "crashed", cross)
        run_sdgen(ROOT, temp_path / "after", COMMANDS["batch-mixed"], paths, cross)
        failures = sum(not compare(name, before[name], after[name]) for name in before)
        failures += not compare("resumed-across", before[RESUME], cross)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
