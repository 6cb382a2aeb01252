"""The folder the docs' shell examples run in (scripts/check_doc_examples.py): tiny random models saved under
every Hub id the examples name, in the Hugging Face cache's own layout, and every input file they name.

    sandbox/hf/hub/models--owner--name/...   HF_HOME (HF_HUB_OFFLINE=1): SD1.5 under its old and new ids, ...
    sandbox/home/                            HOME: ~/loras, ~/emb, ~/wc, ~/models, ~/sd/models/ControlNet, ...
    sandbox/work/                            the inputs: cat.png, photo.jpg, prompts.txt, items.jsonl, ...
    sandbox/bin/                             stand-ins for `producer`, `consumer` and image viewers

Random weights make noise, not pictures: what runs is every flag of every example, not the picture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Stand-ins on PATH for the placeholders and viewers of the examples: each reads what it is given.
STAND_INS = {
    "producer": "#!/bin/sh\nprintf 'a red fox\\n{\"prompt\": \"a blue fox\", \"seed\": 3}\\n'\n",
    "consumer": "#!/bin/sh\ncat > /dev/null\n",
    "display": "#!/bin/sh\ncat \"${1:--}\" | head -c 8 | grep -q PNG\n",
    "montage": "#!/bin/sh\nfor f in \"$@\"; do case $f in *.png) test -s \"$f\" || exit 1;; esac; done\n",
    "feh": "#!/bin/sh\nfor i in $(seq 120); do test -s \"$3\" && exit 0; sleep 0.5; done; exit 1\n",
}

PROMPTS_TXT = "# a comment line: skipped\na red fox\na blue fox\n"
PROMPTS_JSONL = '{"prompt": "a red fox", "seed": 1}\n{"prompt": "a blue fox", "steps": 2, "style": ["cinematic"]}\n'
PROMPTS_CSV = "prompt,seed\na red fox,1\na blue fox,2\n"
ITEMS_JSONL = '{"title": "a red fox", "id": 1}\n{"title": "a blue fox", "id": 2}\n'
STYLES_CSV = 'name,prompt,negative_prompt\ncinematic,"{prompt}, cinematic","cartoon"\nsharp focus,"{prompt}, sharp",\n'


def put_in_hub_cache(hub: Path, folder: Path, repo_id: str, commit: str = COMMIT) -> None:
    """A folder as a Hub repo in the cache, in the hub's own layout: blobs named by sha256, snapshots/<commit>/
    of symlinks to them, refs/main holding the commit (as tests/conftest.py does)."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for source in sorted(folder.rglob("*")):
        if source.is_file():
            blob = repo / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, blob)
            link = snapshot / source.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def _models(parts: Path) -> dict[str, Path]:
    """The tiny models, each built once in `parts`."""
    from sdgen.testing.tiny_fast_models import build_tiny_sd2, build_tiny_sdxs
    from sdgen.testing.tiny_model import build_tiny_autoencoder, build_tiny_model

    made = {
        "sd15": build_tiny_model(parts / "sd15", fp16_variant=True),
        "inpainting": build_tiny_model(parts / "inpainting", in_channels=9),
        "taesd": build_tiny_autoencoder(parts / "taesd"),
        "turbo": build_tiny_sd2(parts / "turbo"),
        "sdxs": build_tiny_sdxs(parts / "sdxs"),
    }
    return made


def _adapters(parts: Path, sd15: Path) -> dict[str, Path]:
    """LoRAs, ControlNets and IP-Adapter for the tiny SD1.5, each in a folder of its own."""
    from diffusers import UNet2DConditionModel

    from sdgen.testing.tiny_adapters import build_tiny_lora
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet, save_tiny_controlnet_file
    from sdgen.testing.tiny_ip_adapter import save_tiny_ip_adapter_repo

    unet = UNet2DConditionModel.from_pretrained(sd15 / "unet")
    build_tiny_lora(sd15, parts / "hyper" / "Hyper-SD15-1step-lora.safetensors", seed=1)
    build_tiny_lora(sd15, parts / "lcm" / "pytorch_lora_weights.safetensors", seed=2)
    build_tiny_lora(sd15, parts / "lora.safetensors", seed=3)
    for name, seed in (("canny", 1), ("tile", 2)):
        save_tiny_controlnet(unet, parts / f"control-{name}", seed=seed)
    for name, seed in (("canny", 3), ("depth", 4), ("openpose", 5), ("lineart", 6)):
        save_tiny_controlnet_file(unet, parts / "controlnet-files" / f"control_v11p_sd15_{name}.safetensors", seed)
    save_tiny_ip_adapter_repo(unet, parts / "ip-adapter")
    return {"lora": parts / "lora.safetensors", "control-files": parts / "controlnet-files"}


def build_hub(hub: Path, parts: Path) -> Path:
    """Every Hub id the examples name, as the tiny model that stands in for it; returns the tiny SD1.5."""
    models = _models(parts)
    made = _adapters(parts, models["sd15"])
    for repo in (SD15, "runwayml/stable-diffusion-v1-5", "someone/its-diffusers-repo"):
        put_in_hub_cache(hub, models["sd15"], repo)
    put_in_hub_cache(hub, models["inpainting"], "stable-diffusion-v1-5/stable-diffusion-inpainting")
    put_in_hub_cache(hub, models["sd15"] / "vae", "stabilityai/sd-vae-ft-mse")
    put_in_hub_cache(hub, models["taesd"], "madebyollin/taesd")
    put_in_hub_cache(hub, models["turbo"], "stabilityai/sd-turbo")
    put_in_hub_cache(hub, models["sdxs"], "IDKiro/sdxs-512-0.9")
    put_in_hub_cache(hub, parts / "hyper", "ByteDance/Hyper-SD")
    put_in_hub_cache(hub, parts / "lcm", "latent-consistency/lcm-lora-sdv1-5")
    put_in_hub_cache(hub, parts / "control-canny", "lllyasviel/control_v11p_sd15_canny")
    put_in_hub_cache(hub, parts / "control-tile", "lllyasviel/control_v11f1e_sd15_tile")
    put_in_hub_cache(hub, parts / "ip-adapter", "h94/IP-Adapter")
    return models["sd15"], made


def _pictures(work: Path) -> None:
    """The input pictures: a 64x64 'photo' (a bright disc on a gradient), masks, maps."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:64]
    disc = (x - 32) ** 2 + (y - 28) ** 2 < 14**2
    photo = np.stack([x * 4, y * 4, np.full_like(x, 90)], -1).astype(np.uint8)
    photo[disc] = (230, 200, 170)
    mask = Image.fromarray((disc * 255).astype(np.uint8))
    for name in ("cat.png", "fox.png", "castle.png", "room.png", "valley.png", "edges.png", "depth.png",
                 "pose.png", "scan.png"):
        Image.fromarray(photo).save(work / name)
    for name in ("photo.jpg", "face.jpg", "dancer.jpg", "photos/one.jpg", "photos/two.jpg"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(work / name, quality=95)
    for name in ("mask.png", "scarf-mask.png", "scarf.png", "window.png"):
        mask.save(work / name)


def _texts(work: Path, home: Path) -> None:
    (work / "prompts.txt").write_text(PROMPTS_TXT)
    (work / "prompts.jsonl").write_text(PROMPTS_JSONL)
    (work / "prompts.csv").write_text(PROMPTS_CSV)
    (work / "items.jsonl").write_text(ITEMS_JSONL)
    (home / ".config" / "sdgen").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "sdgen" / "styles.csv").write_text(STYLES_CSV)  # beside the (absent) config file
    (work / "long-prompt.txt").write_text(", ".join(["a red fox in the deep snow"] * 40))
    for folder in ("wc", "wildcards"):
        (home / folder).mkdir(parents=True, exist_ok=True)
        (home / folder / "animals.txt").write_text("fox\ncat\nowl\n")


def _files(work: Path, home: Path, sd15: Path, made: dict[str, Path]) -> None:
    """Checkpoint files, LoRAs, embeddings, ControlNets, upscalers where the examples name them."""
    import torch
    from safetensors.torch import load_file, save_file

    from sdgen.testing.ldm import model_to_ldm
    from sdgen.testing.tiny_adapters import build_tiny_embedding
    from sdgen.testing.tiny_upscalers import save_blank_gfpgan, save_tiny_upscalers

    tensors = model_to_ldm(sd15)
    for path in ("models/dreamshaper_8.safetensors", "models/some-finetune.safetensors",
                 "models/custom.safetensors"):
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(home / path))
    for path in (home / "Downloads" / "old.ckpt", work / "old-model.ckpt"):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": tensors, "global_step": 1}, path)
    for path in ("loras/ink.safetensors", "loras/ink-style.safetensors", "loras/detail.safetensors",
                 "sd/loras/ink.safetensors"):
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made["lora"], home / path)
    for path in ("emb/easynegative.safetensors", "embeddings/easynegative.safetensors",
                 "sd/embeddings/easynegative.safetensors", "Downloads/my-style-v2.pt"):
        build_tiny_embedding(sd15, home / path)
    shutil.copytree(made["control-files"], home / "sd/models/ControlNet", dirs_exist_ok=True)
    upscalers = save_tiny_upscalers(work / ".upscalers")
    for folder in (work, home / "models/ESRGAN"):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upscalers["4x-tiny-esrgan"], folder / "4x-UltraSharp.safetensors")
    shutil.copyfile(upscalers["2x-tiny-compact"], work / "2x-model.safetensors")
    torch.save(load_file(str(upscalers["4x-tiny-esrgan"])), work / "4x-UltraSharp.pth")
    save_blank_gfpgan(work / "GFPGANv1.4.safetensors")
    (home / "models/GFPGAN").mkdir(parents=True, exist_ok=True)
    (home / "models/GFPGAN/GFPGANv1.4.safetensors").symlink_to(work / "GFPGANv1.4.safetensors")
    (home / "sd/models").mkdir(parents=True, exist_ok=True)
    shutil.copytree(sd15, home / "sd/models/tiny", symlinks=True)


def build_sandbox(root: Path, bin_folder: Path | None = None) -> dict[str, str]:
    """Make the sandbox in `root` (created, must not exist); returns the environment the examples run in."""
    from sdgen.testing.tiny_model import build_tiny_autoencoder

    hub, parts, home, work = root / "hf" / "hub", root / "parts", root / "home", root / "work"
    for folder in (hub, parts, home, work, root / "bin"):
        folder.mkdir(parents=True)
    sd15, made = build_hub(hub, parts)
    _pictures(work)
    _texts(work, home)
    _files(work, home, sd15, made)
    for name in ("my-sd15-folder", "m", "tiny"):
        shutil.copytree(sd15, work / name, symlinks=True)
    build_tiny_autoencoder(work / "taesd")
    for name, text in STAND_INS.items():
        (root / "bin" / name).write_text(text)
        (root / "bin" / name).chmod(0o755)
    (root / "settings.json").write_text(json.dumps({"sd15": str(sd15)}))
    return environment(root, bin_folder)


def environment(root: Path, bin_folder: Path | None = None) -> dict[str, str]:
    """What every example runs with: the sandbox's HOME and Hugging Face cache, offline, one thread each (two
    run at once on two cores; more threads per run, forked or not, only wait on each other)."""
    path = os.pathsep.join(str(p) for p in (root / "bin", bin_folder) if p) + os.pathsep + os.environ["PATH"]
    keep = {key: value for key, value in os.environ.items() if not key.startswith(("SDGEN_", "HF_"))}
    return keep | {
        "PATH": path, "HOME": str(root / "home"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1",
        "SDGEN_CONFIG": str(root / "home" / ".config" / "sdgen" / "config.toml"),
        "SDGEN_CACHE_DIR": str(root / "cache"), "SDGEN_DEVICE": "cpu", "SDGEN_STEPS": "4",
        # the checkpoint files are the tiny model's: its configs, not the shipped full-size SD 1.5 ones
        "SDGEN_MODEL_CONFIG": str(root / "parts" / "sd15"),
        "SDGEN_THREADS": "1", "OMP_NUM_THREADS": "1", "EDITOR": "true",
        "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
    }
