"""The command line on the tiny model: exact stdout, exit codes, stderr messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.hardware.devices import choose_placement

from .conftest import TINY_HUB_ID, run_cli

runner = CliRunner()


def tiny_args(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "2", "--device", "cpu", *extra]


def test_importing_the_cli_does_not_import_torch() -> None:
    code = "import sys, sdgen, sdgen.cli; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "ok", result.stderr


def test_prompt_without_subcommand_generates_and_prints_paths(tiny_model_dir, tmp_path) -> None:
    result = runner.invoke(
        app, ["a red fox", *tiny_args(tiny_model_dir, "--seed", "7", "-n", "2", "-o", f"{tmp_path}/")]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{tmp_path}/00000-7-a-red-fox.png",
        f"{tmp_path}/00001-8-a-red-fox.png",
    ]
    image = Image.open(tmp_path / "00000-7-a-red-fox.png")
    assert image.size == (64, 64)
    assert (
        "Steps: 2, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 7, Size: 64x64"
        in image.text["parameters"]
    )


def test_output_file_and_numbered_siblings(tiny_model_dir, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "fox.png"))])
    assert result.exit_code == 0 and result.stdout == f"{tmp_path / 'fox.png'}\n"
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-n", "2", "-o", str(tmp_path / "many.png"))])
    assert result.stdout.splitlines() == [str(tmp_path / "many-0.png"), str(tmp_path / "many-1.png")]


def test_existing_file_is_not_overwritten_before_loading(tiny_model_dir, tmp_path, no_weights_load) -> None:
    target = tmp_path / "fox.png"
    target.write_bytes(b"precious")
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(target))])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"sdgen: error: '{target}' already exists; pass --overwrite to replace it or choose another name.\n"
    )
    assert target.read_bytes() == b"precious"


def test_overwrite_replaces(tiny_model_dir, tmp_path) -> None:
    target = tmp_path / "fox.png"
    target.write_bytes(b"old")
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(target), "--overwrite")])
    assert result.exit_code == 0
    assert target.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "65"], "sdgen: error: Invalid --width 65: must be a multiple of 8"),
        (["--steps", "0"], "sdgen: error: Invalid --steps 0"),
        (["--scheduler", "nope"], "sdgen: error: Unknown --scheduler 'nope': choose one of"),
        (["--device", "gpu"], "sdgen: error: Invalid --device 'gpu'"),
        (["--dtype", "float16", "--device", "cpu"], "sdgen: error: Invalid --dtype float16 on the CPU"),
        (["--strength", "2", "--init-image", "missing.png"], "sdgen: error: Invalid --strength 2.0"),
        (["-o", "image.gif"], "sdgen: error: Invalid --output 'image.gif': sdgen writes PNG, JPEG or WebP"),
        (["-n", "2", "-o", "-"], "sdgen: error: -o - writes one PNG to stdout, but --num-images is 2"),
    ],
)
def test_bad_input_exits_2_with_one_line_before_loading(no_weights_load, args, message) -> None:
    result = runner.invoke(app, ["a fox", "--model", "never/loaded", *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_model_exits_1(tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "--model", "nobody/nothing", "-o", str(tmp_path / "a.png")])
    assert result.exit_code == 1
    assert result.stderr.startswith("sdgen: error: Model 'nobody/nothing' is not in the Hugging Face cache")


def test_a_hub_id_offline_writes_a_png_to_stdout_and_offline_never_asks_the_hub(hf_home) -> None:
    """The real entry point: a Hub id read from the cache, --offline with the Hub switched on but unreachable
    (nothing asked, no warning), and -o - writing the PNG's bytes to stdout."""
    args = tiny_args(TINY_HUB_ID, "--offline", "-o", "-", "--seed", "1")
    result = run_cli(["a fox", *args], HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"\x89PNG\r\n\x1a\n")
    assert b"Could not reach the Hugging Face Hub" not in result.stderr and b"Hub" not in result.stderr


def test_old_model_name_prints_a_note_and_asks_for_the_new_one(hf_home, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "--model", "runwayml/stable-diffusion-v1-5", "-o", str(tmp_path / "a.png")])
    assert (
        "Note: runwayml/stable-diffusion-v1-5 is now served as stable-diffusion-v1-5/stable-diffusion-v1-5"
        in result.stderr
    )
    # the tests' cache has neither: the failure names the new id, so the alias was followed
    assert result.exit_code == 1
    assert "sdgen: error: Model 'stable-diffusion-v1-5/stable-diffusion-v1-5' is not in the Hugging Face cache" in (
        result.stderr
    )


def test_same_seed_same_bytes_through_the_cli(tiny_model_dir, tmp_path) -> None:
    for name in ("a.png", "b.png"):
        result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "--seed", "9", "-o", str(tmp_path / name))])
        assert result.exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_every_generation_flag_reaches_the_engine(tiny_model_dir, tmp_path) -> None:
    init = tmp_path / "init.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(init)
    args = tiny_args(
        tiny_model_dir,
        "-g",
        "5",
        "-N",
        "blurry",
        "-s",
        "11",
        "--scheduler",
        "euler-a",
        "-n",
        "2",
        "--batch-size",
        "2",
        "--init-image",
        str(init),
        "--strength",
        "0.5",
        "--dtype",
        "float32",
        "-o",
        str(tmp_path / "out.png"),
    )
    result = runner.invoke(app, ["a fox", *args])
    assert result.exit_code == 0, result.output
    text = Image.open(tmp_path / "out-1.png").text["parameters"]
    assert text.splitlines()[:2] == ["a fox", "Negative prompt: blurry"]
    assert "Steps: 2, Sampler: Euler a, Schedule type: Uniform, CFG scale: 5, Seed: 12, Size: 64x64" in text
    assert "Denoising strength: 0.4" in text  # A1111 runs int(0.4 x 2) + 1 = 1 step, as sdgen ran int(0.5 x 2)


def test_prompt_named_like_a_command(tiny_model_dir, tmp_path) -> None:
    # options first, then `--`, then the prompt: everything after `--` is the prompt
    result = runner.invoke(app, [*tiny_args(tiny_model_dir, "-o", str(tmp_path / "s.png")), "--", "schedulers"])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "s.png").text["parameters"].startswith("schedulers\n")


def test_schedulers_command_lists_every_name() -> None:
    from sdgen.config.schedulers import SCHEDULERS

    result = runner.invoke(app, ["schedulers"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines[: len(SCHEDULERS)]] == list(SCHEDULERS)
    assert lines[len(SCHEDULERS) + 1].startswith("A1111 samplers")  # then every A1111 sampler and schedule type
    assert "  DPM++ SDE          dpm++sde          k_diffusion.sampling.sample_dpmpp_sde; Automatic = karras" in lines
    assert "align_your_steps (Align Your Steps)" in lines[-1]
    assert (
        "dpm++2m-karras       DPMSolverMultistepScheduler(use_karras_sigmas=True)  [DPM++ 2M (Karras)]" in result.stdout
    )


def test_help_lists_flags() -> None:
    result = runner.invoke(app, ["generate", "--help"])
    for flag in (
        "--model",
        "--steps",
        "--guidance-scale",
        "--seed",
        "--scheduler",
        "--width",
        "--height",
        "--negative-prompt",
        "--num-images",
        "--init-image",
        "--strength",
        "--device",
        "--dtype",
        "--output",
        "--preset",
        "--from",
        "--batch-size",
        "--rng",
        "--revision",
        "--offline",
        "--name",
        "--overwrite",
        "--json",
        "--no-metadata",
        "--quiet",
        "--verbose",
    ):
        assert flag in result.stdout
    assert "[default: 25]" in result.stdout  # defaults shown come from configs/defaults.toml
    for command in ("config", "info", "doctor", "schedulers"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_json_lines_carry_every_field(tiny_model_dir, tmp_path) -> None:
    import json

    args = tiny_args(tiny_model_dir, "--json", "-s", "3", "-n", "2", "-N", "dull", "-o", f"{tmp_path}/")
    result = runner.invoke(app, ["a fox", *args])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seed"] for r in records] == [3, 4]
    first = records[0]
    assert first["path"] == f"{tmp_path}/00000-3-a-fox.png"
    assert {k: first[k] for k in ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler")} == {
        "prompt": "a fox",
        "negative_prompt": "dull",
        "steps": 2,
        "guidance_scale": 7.5,
        "scheduler": "dpm++2m-karras",
    }
    auto = choose_placement("cpu", "auto").dtype  # bfloat16 on CPUs with AMX/AVX512-BF16, else float32
    assert (first["width"], first["height"], first["device"], first["dtype"]) == (64, 64, "cpu", auto)
    assert first["model"] == str(tiny_model_dir) or first["model"].endswith("tiny-sd")
    assert first["seconds"] > 0


def test_name_template_and_no_metadata(tiny_model_dir, tmp_path) -> None:
    args = tiny_args(
        tiny_model_dir, "-s", "5", "--name", "{slug}_{seed}_{steps}", "--no-metadata", "-o", f"{tmp_path}/"
    )
    result = runner.invoke(app, ["A Fox!", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path}/a-fox_5_2.png\n"
    assert "parameters" not in Image.open(tmp_path / "a-fox_5_2.png").text


def test_quiet_prints_nothing_on_stderr_and_seed_is_reported_otherwise(tiny_model_dir, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-q", "-o", str(tmp_path / "q.png"))])
    assert result.exit_code == 0 and result.stderr == ""
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "v.png"))])
    seed = int(result.stderr.split("Seed ")[1].split()[0])
    assert f"Seed: {seed}," in Image.open(tmp_path / "v.png").text["parameters"]


def test_rng_device_on_cpu_is_accepted_and_recorded(tiny_model_dir, tmp_path) -> None:
    import json

    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "--rng", "device", "-o", str(tmp_path / "r.png"))])
    assert result.exit_code == 0, result.output
    assert json.loads(Image.open(tmp_path / "r.png").text["sdgen"])["rng"] == "device"


def test_doctor_reports_versions_devices_cache_and_a_tiny_run(hf_home) -> None:
    result = runner.invoke(app, ["doctor", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("sdgen         0.1.0")
    assert any(line.startswith("torch         2.") for line in lines)
    auto = choose_placement("cpu", "auto").dtype
    assert f"sdgen uses    cpu, {auto} (VAE {auto})" in lines
    bf16_line = next(line for line in lines if line.startswith("CPU bfloat16  "))
    assert bf16_line.startswith("CPU bfloat16  native;") == (auto == "bfloat16")
    assert any(line.startswith("CPU           ") and len(line) > 14 for line in lines)
    assert any(line.startswith("vector units  ") for line in lines)
    peak = next(line for line in lines if line.startswith("GEMM peak     "))
    assert re.match(r"GEMM peak     float32 \d+ GFLOP/s, bfloat16 \d+ GFLOP/s", peak), peak
    assert f"HF cache      {hf_home / 'hub'}" in lines
    assert "default model stable-diffusion-v1-5/stable-diffusion-v1-5: not downloaded yet" in lines
    from sdgen.hardware.threads import choose_threads

    assert f"threads       {choose_threads().threads} ({choose_threads().reason}; --threads N to change)" in lines
    assert any(line.startswith("preset fast   none of its recipes is in the Hugging Face cache") for line in lines)
    assert lines[-1].startswith("tiny model    ok: 4 steps at 64x64 on cpu in ")


def test_doctor_with_a_missing_device_exits_2() -> None:
    result = runner.invoke(app, ["doctor", "--device", "cuda:3"])
    assert result.exit_code == 2 and "sdgen: error: Device 'cuda:3' is not available" in result.stderr


def test_revision_flag_pins_the_hub_revision(hf_home, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", *tiny_args(TINY_HUB_ID, "--revision", "v9", "-o", str(tmp_path / "a.png"))])
    assert result.exit_code == 1
    assert "at revision 'v9'" in result.stderr


def test_config_command_shows_each_value_and_its_source(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('scheduler = "euler"\n')
    env = {"SDGEN_CONFIG": str(config), "SDGEN_STEPS": "30"}
    result = runner.invoke(app, ["config", "--preset", "quality"], env=env)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split(maxsplit=2)[1:] for line in result.stdout.splitlines() if line[0] != "#"}
    assert lines["steps"] == ["30", "env SDGEN_STEPS"]
    assert lines["scheduler"] == ['"euler"', f"user config {config}"]
    assert lines["guidance_scale"] == ["7.0", "preset quality"]
    assert lines["batch_size"] == ["1", "built-in"]
    assert result.stdout.splitlines()[0] == f"# user config: {config}"
    record = json.loads(runner.invoke(app, ["config", "--json"], env=env).stdout)
    assert record["steps"] == {"value": 30, "source": "env SDGEN_STEPS"}
    assert runner.invoke(app, ["config", "--path"], env=env).stdout == f"{config}\n"


def test_settings_reach_generation_and_flags_win(tiny_model_dir, tmp_path) -> None:
    config = tmp_path / "config.toml"
    out = tmp_path / "made"
    config.write_text(
        f'model = "{tiny_model_dir}"\ndevice = "cpu"\nsteps = 3\nscheduler = "euler"\n'
        f'output = "{out}/"\nname = "{{slug}}-{{seed}}"\n'
        "[presets.tiny]\nwidth = 64\nheight = 64\nsteps = 9\nguidance_scale = 2.0\n"
    )
    env = {"SDGEN_CONFIG": str(config), "SDGEN_GUIDANCE_SCALE": "5", "SDGEN_PRESET": "tiny"}
    result = runner.invoke(app, ["a fox", "--seed", "4", "--steps", "2"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}/a-fox-4.png\n"
    text = Image.open(out / "a-fox-4.png").text["parameters"]
    # steps: flag 2 over user 3 over preset 9; guidance: env 5 over preset 2; sampler from the user config
    assert "Steps: 2, Sampler: Euler, Schedule type: Uniform, CFG scale: 5, Seed: 4, Size: 64x64" in text


def test_metadata_can_be_turned_off_in_settings(tiny_model_dir, tmp_path) -> None:
    result = runner.invoke(
        app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "a.png"))], env={"SDGEN_METADATA": "false"}
    )
    assert result.exit_code == 0, result.output
    assert "parameters" not in Image.open(tmp_path / "a.png").text


def test_bad_setting_names_its_source_before_loading(no_weights_load, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "-o", str(tmp_path / "a.png")], env={"SDGEN_STEPS": "0"})
    assert result.exit_code == 2
    assert result.stderr == (
        "sdgen: error: Invalid --steps 0: must be a whole number from 1 to 1000. (set by env SDGEN_STEPS)\n"
    )
    result = runner.invoke(app, ["a fox", "--preset", "warp"])
    assert result.exit_code == 2 and "Unknown preset 'warp' (from --preset)" in result.stderr


def test_ctrl_c_exits_130_and_keeps_finished_images(tiny_model_dir, tmp_path) -> None:
    import os
    import signal

    args = [*tiny_args(tiny_model_dir), "--steps", "8", "-n", "50", "--seed", "1", "-o", f"{tmp_path}/"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sdgen", "a fox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    first = process.stdout.readline().decode().strip()  # the first image is written and reported
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert b"interrupted; finished images are kept" in stderr
    written = sorted(p.name for p in tmp_path.iterdir())
    reported = [first, *rest.decode().split()]
    assert [str(tmp_path / name) for name in written] == reported  # every reported image is whole
    assert 1 <= len(written) < 50
    for name in written:
        Image.open(tmp_path / name).load()


def test_memory_flags_work_end_to_end(tiny_model_dir, tmp_path) -> None:
    args = tiny_args(tiny_model_dir, "--attention-slicing", "--vae-slicing", "--vae-tiling", "-n", "2")
    result = runner.invoke(app, ["a fox", *args, "--batch-size", "2", "-o", f"{tmp_path}/"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2
    shown = runner.invoke(app, ["config", "--preset", "low-memory", "--json"])
    record = json.loads(shown.stdout)
    assert all(record[key] == {"value": True, "source": "preset low-memory"} for key in ("vae_slicing", "vae_tiling"))


@pytest.mark.parametrize("command", [["a fox"], ["batch", "-"]])
def test_offload_on_a_cpu_is_refused_before_loading(no_weights_load, tmp_path, command) -> None:
    result = runner.invoke(app, [*command, "--device", "cpu", "--offload", "model", "-o", f"{tmp_path}/"])
    assert result.exit_code == 2
    assert result.stderr.startswith("sdgen: error: Invalid --offload model on cpu:")


def test_on_off_flags_undo_what_settings_switched_on(tiny_model_dir, tmp_path) -> None:
    env = {"SDGEN_METADATA": "false", "SDGEN_VAE_TILING": "true"}
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "a.png"))], env=env)
    assert result.exit_code == 0, result.output
    assert "parameters" not in Image.open(tmp_path / "a.png").text
    args = tiny_args(tiny_model_dir, "--metadata", "--no-vae-tiling", "-o", str(tmp_path / "b.png"))
    result = runner.invoke(app, ["a fox", *args], env=env)
    assert result.exit_code == 0, result.output
    assert "Steps: 2" in Image.open(tmp_path / "b.png").text["parameters"]
    shown = runner.invoke(app, ["config", "--json"], env=env).stdout
    assert json.loads(shown)["vae_tiling"] == {"value": True, "source": "env SDGEN_VAE_TILING"}


def test_hires_pass_through_the_cli_is_recorded_the_a1111_way_and_replayed(tiny_model_dir, tmp_path) -> None:
    hires = ["--hires-scale", "2", "--hires-steps", "4", "--hires-strength", "0.5", "--hires-upscaler", "lanczos"]
    args = ["a fox", *tiny_args(tiny_model_dir, "--seed", "4", *hires, "-o", str(tmp_path / "a.png"))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    image = Image.open(tmp_path / "a.png")
    assert image.size == (128, 128)
    # Hires steps: the 2 steps run (int(4 x 0.5)), of a 4-step schedule (2 / 0.5): A1111's counting
    assert ("Size: 64x64, Model: tiny-model, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 2, "
            "Hires upscaler: Lanczos") in image.text["parameters"].replace(tiny_model_dir.name, "tiny-model")
    again = runner.invoke(app, ["--from", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(image), np.asarray(Image.open(tmp_path / "b.png")))
    from sdgen.record.metadata import parse_a1111, request_values_from_image

    assert parse_a1111(image.text["parameters"])["fields"]["Hires upscale"] == "2"
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", image.text["parameters"])
    image.save(tmp_path / "a1111-only.png", pnginfo=info)
    values = request_values_from_image(tmp_path / "a1111-only.png")
    assert (values["hires_scale"], values["hires_steps"], values["hires_strength"], values["hires_upscaler"]) == (
        2.0, 4, 0.5, "lanczos")


def test_hires_with_save_steps_is_refused_before_loading(no_weights_load, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "--hires-scale", "2", "--save-steps", str(tmp_path / "s.png")])
    assert result.exit_code == 2 and "--hires-scale" in result.stderr


@pytest.mark.parametrize("name", ["fox.jpg", "fox.webp"])
def test_jpeg_and_webp_outputs_carry_the_parameters_as_a1111_writes_them(tiny_model_dir, tmp_path, name) -> None:
    """Issue 24: -o x.jpg and x.webp: A1111's parameters in the EXIF UserComment, sdgen's record beside them;
    `sdgen info` and --from read them back."""
    args = ["a fox\non a hill", *tiny_args(tiny_model_dir, "--seed", "8", "-o", str(tmp_path / name))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    image = Image.open(tmp_path / name)
    assert image.format == {"fox.jpg": "JPEG", "fox.webp": "WEBP"}[name]
    comment = image.getexif().get_ifd(0x8769)[0x9286]
    assert comment.startswith(b"UNICODE\0") and comment[8:].decode("utf-16-be").startswith("a fox\non a hill\nSteps:")
    shown = runner.invoke(app, ["info", str(tmp_path / name)])
    assert shown.exit_code == 0 and "Seed: 8" in shown.stdout
    again = runner.invoke(app, ["--from", str(tmp_path / name), "-o", str(tmp_path / "again.png")])
    assert again.exit_code == 0, again.output
    from sdgen.record.metadata import read_image_metadata

    assert read_image_metadata(tmp_path / "again.png")[1]["prompt"] == "a fox\non a hill"
