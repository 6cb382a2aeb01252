"""--backend openvino and --quantize int8 (sdgen/models/openvino.py, sdgen/engine/openvino_parts.py) on the tiny
model: the picture against torch float32, the conversion cache (its key, and a second process that reads it
back without converting), int8's change of the picture, and the refusals before any weights load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.model_spec import ModelSpec
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError

from .conftest import SIZE, run_cli

runner = CliRunner()
PROMPT = "a red fox in the snow"


def _request(**given) -> GenerationRequest:
    return GenerationRequest(**{"prompt": PROMPT, "width": SIZE, "height": SIZE, "num_inference_steps": 3, "seed": 7,
                                **given})


def _pixels(parts, request: GenerationRequest | None = None) -> np.ndarray:
    from sdgen.engine.pipeline import generate

    return np.asarray(generate(request or _request(), parts)[0].image).astype(np.int16)


def _load(tiny_model_dir, **spec):
    from sdgen.engine.loader import load_model

    return load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", backend="openvino", **spec))


def test_openvino_float32_matches_torch_float32_within_one_level(tiny_parts, ov_parts):
    # f32 inference (INFERENCE_PRECISION_HINT=f32) runs the same arithmetic in another order (oneDNN's kernels
    # and OpenVINO's fused ones): float32 rounding differences of ~1e-6, which the 8-bit picture shows at most as
    # one level (1/255) in a few pixels; a real difference (a missed input, a wrong timestep) moves dozens.
    parts = ov_parts
    torch_image, ov_image = _pixels(tiny_parts), _pixels(parts)
    difference = np.abs(torch_image - ov_image)
    assert difference.max() <= 1, difference.max()
    assert difference.mean() < 0.05, difference.mean()
    assert set(parts.openvino.compiled) == {"unet", "text_encoder", "vae_decoder"}
    # a cold cache: each torch module loaded to be converted, then its weights dropped (the memory given back)
    from sdgen.engine.openvino_weights import is_empty

    assert parts.openvino.weights.loads == ["text_encoder", "unet", "vae"], parts.openvino.weights.loads
    assert is_empty(parts.unet) and is_empty(parts.vae.module) and is_empty(parts.text_encoder)
    # image-to-image through the converted encoder, and clip skip through the text encoder's hidden states
    from PIL import Image

    init = Image.fromarray(torch_image.astype(np.uint8))
    request = _request(init_image=init, strength=0.6, clip_skip=2)
    difference = np.abs(_pixels(tiny_parts, request) - _pixels(parts, request))
    assert difference.max() <= 1, difference.max()


def test_compiled_parts_keep_no_mapped_weights_and_the_decoder_runs_alone(ov_parts, ov_cache, monkeypatch):
    # OpenVINO reads model.bin once to repack the weights and keeps it mapped: its pages are given back while
    # and after a part compiles (sdgen/models/mapped_files.py; before, all of it stayed resident), and the
    # denoising parts' buffers before the VAE decodes; the picture is the same again after both
    from sdgen.models.openvino import _core, compile_for_cpu, static_model

    from .test_models_mapped_files import resident_mib

    first = _pixels(ov_parts)
    (xml,) = [path for path in ov_cache.rglob("unet/*/model.xml") if "shapes" not in path.parts]
    shapes = ov_parts.openvino.compiled["unet"][0][2]
    compiled = compile_for_cpu(str(xml), "float32", shapes)
    weights = Path(static_model(_core(), str(xml), shapes)).with_suffix(".bin")
    assert str(weights.resolve()) in Path("/proc/self/maps").read_text()  # OpenVINO keeps it mapped
    assert resident_mib(weights) < 0.1 * weights.stat().st_size / 2**20
    del compiled
    released: list[str] = []
    monkeypatch.setattr(type(ov_parts.openvino), "release_buffers", lambda self, but: released.append(but))
    assert np.array_equal(_pixels(ov_parts), first)
    assert released == ["vae_decoder"]


def test_release_buffers_frees_every_part_but_the_one_named_and_skips_a_busy_one(tiny_parts):
    from sdgen.engine.openvino_parts import OpenVINOParts

    class Compiled:
        def __init__(self, busy: bool = False) -> None:
            self.busy, self.released = busy, 0

        def release_memory(self) -> None:
            if self.busy:
                raise RuntimeError("Cannot release memory while inference requests are running")
            self.released += 1

    runtime = OpenVINOParts(tiny_parts, "float32", "none")
    runtime.compiled = {"unet": (None, Compiled()), "text_encoder": (None, Compiled(busy=True)),
                        "vae_decoder": (None, Compiled())}
    runtime.release_buffers(but="vae_decoder")
    assert [compiled.released for _, compiled in runtime.compiled.values()] == [1, 0, 0]


def test_int8_changes_the_picture_by_a_bounded_amount(tiny_parts, tiny_model_dir, ov_cache):
    # int8 weights (NNCF INT8_ASYM, per output channel) round each weight to 1/255 of its channel's range: the
    # picture moves, but stays the same picture. Measured on the tiny model at 3 steps: max 4-6 levels, mean
    # about 0.5 (docs/openvino.md); bounds with room for another CPU's kernels.
    import logging

    import nncf  # noqa: F401  (its import sets its logger up: level INFO, a stdout handler)

    nncf_logger, hosts_handler = logging.getLogger("nncf"), logging.NullHandler()  # as a server's or pytest's
    level = nncf_logger.level
    nncf_logger.addHandler(hosts_handler)
    try:  # the parts are converted and quantized when the run first needs them
        difference = np.abs(_pixels(tiny_parts) - _pixels(_load(tiny_model_dir, dtype="float32", quantize="int8")))
    finally:
        nncf_logger.removeHandler(hosts_handler)
    # NNCF was quieted for its run only, through its logger, leaving the host's handler as it was
    assert (hosts_handler.level, nncf_logger.level) == (logging.NOTSET, level)
    print(f"int8 against torch float32: max {difference.max()}, mean {difference.mean():.3f} levels")
    assert 0 < difference.mean() < 2.0, difference.mean()
    assert difference.max() <= 24, difference.max()


def test_a_second_process_reads_the_converted_models_from_the_cache(tiny_model_dir, ov_parts, ov_cache, tmp_path):
    # ov_parts converted the tiny model into ov_cache (float32, no int8) when it first ran: the same run in a new
    # process reads every part back from the cache and converts nothing
    # and never loads the torch weights (a warm start: configs only, the U-Net never built with weights),
    # its picture the cold run's exactly (the same saved models, compiled the same way)
    from PIL import Image

    cold = _pixels(ov_parts)
    args = [PROMPT, "--model", str(tiny_model_dir), "-W", str(SIZE), "-H", str(SIZE), "--steps", "3", "--seed", "7",
            "--backend", "openvino", "--dtype", "float32", "-v", "-o", str(tmp_path / "fox.png")]
    result = run_cli(args, SDGEN_CACHE_DIR=str(ov_cache), HF_HUB_OFFLINE="1")
    log = result.stderr.decode()
    assert result.returncode == 0, log
    assert "converting" not in log, log
    assert "loading the torch" not in log, log
    for part in ("unet", "text_encoder", "vae_decoder"):
        assert f"OpenVINO: the {part} from the cache" in log, log
        # and compiled while the model loaded, from the record of the first run's shapes
        assert f"OpenVINO: the {part} compiled while the model loaded" in log, log
    warm = np.asarray(Image.open(tmp_path / "fox.png").convert("RGB")).astype(np.int16)
    assert np.array_equal(warm, cold), np.abs(warm - cold).max()



def test_a_lora_is_in_the_converted_models_and_a_warm_load_fuses_nothing(tiny_model_dir, tiny_parts, ov_parts,
                                                                          tmp_path):
    # the run's LoRA fused before the U-Net and text encoder convert: the picture is torch float32's with the same
    # LoRA within one level; a second load of the same model and LoRA reads both from the cache and never loads
    # or fuses the torch weights (the LoRA's file identity is in the key); dropping the LoRA gives the plain model
    from sdgen.testing.tiny_adapters import build_tiny_lora

    plain = _pixels(ov_parts)  # the plain model in the cache
    lora = tmp_path / "detail.safetensors"
    build_tiny_lora(tiny_model_dir, lora, seed=3)
    with_lora = _request(loras=(f"{lora}:0.8",))
    cold = _load(tiny_model_dir, dtype="float32")
    torch_image, ov_image = _pixels(tiny_parts, with_lora), _pixels(cold, with_lora)
    assert np.abs(torch_image - ov_image).max() <= 1
    assert np.abs(ov_image - plain).max() > 5  # the LoRA does change the picture
    assert {"unet", "text_encoder"} <= set(cold.openvino.weights.loads)
    warm = _load(tiny_model_dir, dtype="float32")
    assert np.array_equal(_pixels(warm, with_lora), ov_image)
    assert warm.openvino.weights.loads == [] and warm.adapters.fused == ()
    assert np.array_equal(_pixels(warm), plain)  # back to the plain model, still no torch weights
    assert warm.openvino.weights.loads == []

def test_each_part_compiles_with_the_runs_static_shapes(tiny_model_dir, ov_parts, ov_cache):
    # the run's shapes: a static copy of each model.xml in the entry's shapes/DIGEST/, sharing its weights file (a
    # hard link: reshaping changes no weight), and the compiled U-Net takes exactly the guided batch at the run's
    # latent size
    import openvino

    _pixels(ov_parts)
    unet_xml = next(ov_cache.rglob("unet/*/model.xml"))
    static = list(unet_xml.parent.glob("shapes/*/model.xml"))
    assert len(static) == 1, static
    assert static[0].with_suffix(".bin").stat().st_ino == unet_xml.with_suffix(".bin").stat().st_ino
    shapes = [list(port.get_partial_shape().to_shape()) for port in openvino.Core().read_model(static[0]).inputs]
    latent = SIZE // ov_parts.vae_scale_factor
    assert shapes == [[2, 4, latent, latent], [1], [2, 77, 32]], shapes
    compiled = ov_parts.openvino.compiled["unet"][1]
    assert all(port.get_partial_shape().is_static for port in compiled.inputs)


def test_the_compiled_parts_run_on_the_runs_threads(ov_parts, ov_cache, monkeypatch):
    # --threads N (else one per physical core) is set on torch by the run's prologue; OpenVINO's CPU plugin has
    # threads of its own, told the same number when each part compiles (it caps them at the CPUs this process
    # may use: one per test worker, so the number asked for is read from the call, the cap from the result)
    import torch

    from sdgen.models import openvino as ov_models

    _pixels(ov_parts)
    xml = next(ov_cache.rglob("unet/*/model.xml"))
    shapes = tuple(tuple(port.get_partial_shape().to_shape()) for port in ov_parts.openvino.compiled["unet"][1].inputs)
    core, asked = ov_models._core(), []

    class Recording:
        def compile_model(self, model, device, config):
            asked.append(config["INFERENCE_NUM_THREADS"])
            return core.compile_model(model, device, config)

    monkeypatch.setattr(ov_models, "_core", lambda: Recording())
    before = torch.get_num_threads()
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            compiled = ov_models.compile_for_cpu(str(xml), "float32", shapes)
            assert compiled.get_property("INFERENCE_NUM_THREADS") <= threads
    finally:
        torch.set_num_threads(before)
    assert asked == [1, 3]


def test_each_converted_part_is_a_cache_entry_and_each_shape_it_ran_at_one_more(tiny_model_dir, ov_parts, ov_cache):
    # OpenVINO's compiled blobs go in the folder of the static-shape form they were compiled from, inside the
    # part's entry (so pruning a size no longer run frees its blobs, and pruning the model takes them too); each
    # compile notes the last use of both; `sdgen cache list` names the parts, the model and the shapes
    from sdgen.models.caches import LAST_USED, list_caches

    _pixels(ov_parts)
    model = str(tiny_model_dir.resolve())
    ours = [entry for entry in list_caches(ov_cache) if entry.kind == "openvino" and entry.model == model]
    latent = SIZE // ov_parts.vae_scale_factor
    for part in ("unet", "text_encoder", "vae_decoder"):
        compiled = [entry for entry in ours if entry.part == part and entry.form == "none" and entry.shapes
                    and list((Path(entry.path) / "compiled").glob("*.blob"))]
        assert compiled, f"no {part} shape of {model} with a compiled blob: {ours}"
        for entry in compiled:
            assert (Path(entry.path) / LAST_USED).is_file() and not entry.stale
            assert (Path(entry.path).parent.parent / LAST_USED).is_file()  # the model's own entry
    assert f"2x4x{latent}x{latent} 1 2x77x32" in {entry.shapes for entry in ours if entry.part == "unet"}
    # weightless blobs (CACHE_MODE OPTIMIZE_SIZE): the float weights read from the shape's model.bin on import,
    # not copied into the blob (int8's compressed weights are stored transformed: those blobs stay full; the tiny
    # text encoder's and VAE's blobs are mostly their graphs)
    for entry in ours:
        for blob in Path(entry.path).glob("compiled/*.blob") if (entry.part, entry.form) == ("unet", "none") else ():
            assert blob.stat().st_size < (blob.parent.parent / "model.bin").stat().st_size / 2, blob
    assert not list((ov_cache / "openvino").glob("ov-*/compiled"))  # no blobs shared by every entry
    assert not list((ov_cache / "openvino").glob("ov-*/*/*/compiled"))  # nor by every shape of a model


def test_where_heads_are_padded_the_padded_forms_are_cached_and_used(tiny_model_dir, ov_cache, monkeypatch):
    # on AMX in bf16 the U-Net's f16 and int8 forms are saved with padded attention heads (f16-padded,
    # int8-padded); told so here in float32 (bf16 would need bf16 units), int8 being one of those forms. The tiny
    # U-Net's heads are 8 wide, so nothing is padded and the picture is int8's own. The text encoder and the VAE
    # have no narrow heads: they keep their plain forms, not a second copy on disk.
    from sdgen.engine import openvino_parts
    from sdgen.models import openvino_graph
    from sdgen.models.caches import list_caches

    asked = []
    monkeypatch.setattr(openvino_graph, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    monkeypatch.setattr(openvino_parts, "pads_heads",
                        lambda precision, part: asked.append(precision) or openvino_graph.pads_heads("bfloat16", part))
    padded = _pixels(_load(tiny_model_dir, dtype="float32", quantize="int8"))
    model = str(tiny_model_dir.resolve())
    forms = {(entry.part, entry.form) for entry in list_caches(ov_cache) if entry.model == model}
    assert {("unet", "int8-padded"), ("text_encoder", "int8"), ("vae_decoder", "int8")} <= forms
    assert not {("text_encoder", "int8-padded"), ("vae_decoder", "int8-padded")} & forms
    assert set(asked) == {"float32"}
    monkeypatch.setattr(openvino_parts, "pads_heads", lambda precision, part: False)
    assert np.array_equal(padded, _pixels(_load(tiny_model_dir, dtype="float32", quantize="int8")))


def test_a_conversion_that_cannot_be_saved_leaves_no_half_written_entry(tmp_path, monkeypatch):
    # a full disk while the converted model is written: one line (sdgen's WriteError), its temporary folder gone
    import openvino

    from sdgen.errors import WriteError
    from sdgen.models import openvino as ov_models

    monkeypatch.setattr(openvino, "save_model", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("iostream")))
    source = openvino.opset13.parameter([1, 4], np.float32)
    with pytest.raises(WriteError, match="Could not write OpenVINO's model into"):
        ov_models._save(openvino.Model([openvino.opset13.relu(source)], [source]), tmp_path / "unet" / "k", {"a": 1})
    assert list((tmp_path / "unet").iterdir()) == []


def test_deepcache_runs_its_two_passes_as_two_converted_models(tiny_parts, ov_parts):
    # the whole pass returns the kept features as a second output, the shallow pass takes them; 4 steps at
    # interval 2: two of each; the picture is torch's DeepCache picture, within the bound above
    request = _request(cache_interval=2, num_inference_steps=4)
    torch_image, ov_image = _pixels(tiny_parts, request), _pixels(ov_parts, request)
    difference = np.abs(torch_image - ov_image)
    assert difference.max() <= 1 and difference.mean() < 0.05, (difference.max(), difference.mean())
    assert np.abs(torch_image - _pixels(tiny_parts, _request(num_inference_steps=4))).mean() > 0.1  # it skipped
    assert {"unet-deepcache", "unet-shallow"} <= set(ov_parts.openvino.compiled)
    # a new load compiles the plain U-Net of the earlier runs ahead; DeepCache's first pass lets it go
    import locale

    before = locale.setlocale(locale.LC_CTYPE)
    fresh = _load(ov_parts.source.folder, dtype="float32")
    assert "unet" in fresh.openvino.prefetch.pending
    assert np.array_equal(_pixels(fresh, request), ov_image)
    assert "unet" not in fresh.openvino.prefetch.pending and "unet" not in fresh.openvino.compiled
    # OpenVINO sets the locale to "C" while it reads a model file: the prefetch thread's compile and this
    # thread's must not interleave, or "C" (ASCII text files) stays for the rest of the process
    assert locale.setlocale(locale.LC_CTYPE) == before


@pytest.mark.parametrize(
    ("given", "key"),
    [({"controls": ("canny=edges.png",)}, "control"), ({"adapters": ("sketch=lines.png",)}, "adapter"),
     ({"cache_interval": 3}, "cache_interval"), ({"ip_adapter": "ip-adapter_sd15"}, "ip_adapter")],
)
def test_int8_hybrid_refuses_the_inputs_it_was_not_calibrated_with(tiny_model_dir, given, key) -> None:
    from sdgen.engine.openvino_parts import check_request

    spec = ModelSpec(model=str(tiny_model_dir), backend="openvino", quantize="int8-hybrid").checked()
    check_request(_request(cache_interval=1), spec)
    with pytest.raises(InvalidRequestError, match="calibrated without .*; use --quantize int8") as caught:
        check_request(_request(**given), spec)
    assert caught.value.key == key
    weights_only = ModelSpec(model=str(tiny_model_dir), backend="openvino", quantize="int8").checked()
    check_request(_request(**given), weights_only)  # int8 weights: fine


def test_parts_are_traced_on_one_row_at_a_small_size_and_odd_sizes_whole():
    # the trace's activations stay with the process: a cold start traces one row at a small size, every 4-D input
    # cut in proportion (the converted model keeps dynamic shapes); a side the U-Net's factor does not divide takes
    # another Python branch in diffusers' U-Net, so that run is traced at its own size and keyed apart
    import torch

    from sdgen.models.openvino import trace_example

    sample, t, states = torch.zeros(2, 4, 64, 72), torch.ones(1), torch.zeros(2, 77, 8)
    residual, image = torch.zeros(2, 320, 32, 36), torch.zeros(2, 3, 512, 576)
    example, key = trace_example((sample, t, states, residual, image), 8)
    assert [tuple(x.shape) for x in example] == [(1, 4, 16, 8), (1,), (1, 77, 8), (1, 320, 8, 4), (1, 3, 128, 64)]
    assert key == {}
    odd = (torch.zeros(2, 4, 65, 64), t, states)
    assert trace_example(odd, 8) == (odd, {"odd_size": True})
    uncut = (sample, t, torch.zeros(2, 4, 7, 7))  # 7 is no multiple of 64 / 16: every input whole
    assert trace_example(uncut, 8) == (uncut, {})


def test_the_cache_key_follows_what_the_weights_depend_on(tmp_path):
    from sdgen.models.openvino import cache_key, file_identity

    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"one")
    fields = {"model": "m", "commit": "abc", "loras": [(str(lora), 0.8, file_identity(lora))], "quantize": "none"}
    assert cache_key(fields) == cache_key(dict(reversed(list(fields.items()))))  # order does not matter
    others = [
        {**fields, "commit": "abd"},
        {**fields, "loras": [(str(lora), 0.7, file_identity(lora))]},
        {**fields, "quantize": "int8"},
        {**fields, "loras": []},
        {**fields, "embeddings": [("e.pt", "<e>", [])]},
    ]
    assert len({cache_key(fields), *map(cache_key, others)}) == len(others) + 1
    lora.write_bytes(b"changed")  # the same file name with other weights
    assert file_identity(lora) != fields["loras"][0][2]



def test_a_local_model_and_lora_are_keyed_by_their_files_not_the_path_as_typed(tmp_path, monkeypatch):
    """`--model ./m` and `--model /abs/m` (and a LoRA given either way) share one cache entry."""
    from types import SimpleNamespace

    from sdgen.engine.openvino_parts import OpenVINOParts
    from sdgen.models.hub import ModelSource

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model_index.json").write_text("{}")
    (tmp_path / "style.safetensors").write_bytes(b"one")
    monkeypatch.chdir(tmp_path)

    def keys(model: str, lora: str):
        source = ModelSource(model=model, folder=Path(model))
        loras = [SimpleNamespace(source=lora, scale=0.8)]
        parts = SimpleNamespace(source=source, adapters=SimpleNamespace(loras=loras))
        runtime = OpenVINOParts(parts, "float32", "none")
        return runtime.identity(), runtime.loras()

    typed = keys("m", "style.safetensors")
    assert typed == keys(str(tmp_path / "m"), str(tmp_path / "style.safetensors"))
    (tmp_path / "m" / "model_index.json").write_text('{"changed": 1}')  # other files: another key
    assert keys("m", "style.safetensors")[0] != typed[0]

@pytest.mark.parametrize(
    ("spec", "key", "words"),
    [
        ({"quantize": "int8"}, "quantize", "add --backend openvino"),
        ({"backend": "onnx"}, "backend", "use one of torch, openvino"),
        ({"backend": "openvino", "quantize": "int4"}, "quantize", "use one of none, int8"),
        ({"backend": "openvino", "device": "cuda"}, "device", "for the CPU only"),
        ({"backend": "openvino", "compile": True}, "compile", "torch.compile"),
        ({"backend": "openvino", "dtype": "float16"}, "dtype", "float32 or bfloat16"),
        ({"backend": "openvino", "token_merging": 0.5}, "token_merging", "token merging"),
        ({"backend": "openvino", "vae_tiling": True}, "vae_tiling", "whole images"),
    ],
)
def test_model_options_it_cannot_run_with_are_refused(tiny_model_dir, spec, key, words) -> None:
    with pytest.raises(InvalidRequestError, match=words) as caught:
        ModelSpec(model=str(tiny_model_dir), **spec).checked()
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"ip_adapter": "ip-adapter_sd15", "cache_interval": 3}, "cache_interval"),
        ({"freeu": "1.5,1.6,0.9,0.2"}, "freeu"),
        ({"pag_scale": 3.0}, "pag_scale"),
        ({"sag_scale": 0.75}, "sag_scale"),
        ({"tiling": "both"}, "tiling"),
    ],
)
def test_request_options_it_cannot_run_with_are_refused(tiny_model_dir, given, key) -> None:
    from sdgen.engine.openvino_parts import check_request

    spec = ModelSpec(model=str(tiny_model_dir), backend="openvino").checked()
    check_request(_request(), spec)  # the plain request runs
    check_request(_request(controls=[], cache_interval=1), spec)  # as --from replays a record: empty, off
    with pytest.raises(InvalidRequestError, match="with --backend openvino") as caught:
        check_request(_request(**given), spec)
    assert caught.value.key == key


def test_the_command_line_refuses_in_one_line_before_loading(tiny_model_dir, no_weights_load) -> None:
    args = ["a fox", "--model", str(tiny_model_dir), "--backend", "openvino", "--pag-scale", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines == ["sdgen: error: Invalid --pag-scale 3.0 with --backend openvino: perturbed-attention guidance "
                     "patches the torch U-Net's attention; drop --pag-scale or use --backend torch."], lines


def test_a_missing_extra_names_its_install_command(tiny_model_dir, monkeypatch, no_weights_load) -> None:
    import importlib.util

    import sdgen.models.openvino

    real = importlib.util.find_spec
    monkeypatch.setattr(sdgen.models.openvino.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "openvino" else real(name, *rest))
    result = runner.invoke(app, ["a fox", "--model", str(tiny_model_dir), "--backend", "openvino"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        'sdgen: error: Invalid --backend openvino: the openvino package is not installed; run: '
        'pip install "sdgen[openvino]".'
    )


def test_int8_hybrid_refuses_an_inpainting_model_before_loading(tmp_path, no_weights_load) -> None:
    from sdgen.testing.tiny_model import build_tiny_model

    inpainting = build_tiny_model(tmp_path / "inpainting", in_channels=9)
    args = ["a fox", "--model", str(inpainting), "--backend", "openvino", "--quantize", "int8-hybrid"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        f"sdgen: error: Invalid --quantize int8-hybrid for {str(inpainting)!r}: its U-Net takes 9 channels (an "
        "inpainting model) and int8-hybrid calibrates 4-channel U-Nets; use --quantize int8 (weights only)."
    )
    ModelSpec(model=str(inpainting), backend="openvino", quantize="int8").checked()  # weights only: fine
