"""The option table's rows of steering with images: ControlNet (sdgen/engine/plugins/controlnet.py,
docs/controlnet.md), T2I-Adapter and IP-Adapter (sdgen/engine/plugins/t2i_adapter.py, ip_adapter.py,
docs/adapters.md). The rest of the table, and what a row says: sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import REQUEST, RUNS, Option

STEERING_ROWS: tuple[Option, ...] = (
    Option(
        "control", list, None,
        "ControlNet: MODEL=IMAGE[:WEIGHT[:START[:END]]][:MODE][:RESIZE][:PREPROCESSOR] (MODE balanced, prompt "
        "or control; RESIZE crop, resize or fill; PREPROCESSOR none, invert or canny); repeat.",
        REQUEST, field_name="controls", commands=RUNS, shapes_picture=True,
    ),
    Option(
        "control_dir", str, None, "Folder of ControlNets (A1111's models/ControlNet): --control canny=... finds "
        "control_v11p_sd15_canny.safetensors there.", REQUEST, path=True, batch_line="control_dir",
        record="control_dir",
    ),
    Option(
        "adapter", list, None,
        "T2I-Adapter: MODEL=IMAGE[:WEIGHT][:RESIZE][:PREPROCESSOR] (RESIZE crop, resize or fill; PREPROCESSOR none, "
        "invert or canny); repeat.",
        REQUEST, field_name="adapters", commands=RUNS, shapes_picture=True,
    ),
    Option(
        "adapter_dir", str, None, "Folder of T2I-Adapters (diffusers folders): --adapter canny=... finds "
        "t2iadapter_canny_sd15v2 there.", REQUEST, path=True, batch_line="adapter_dir", record="adapter_dir",
    ),
    Option(
        "ip_adapter", str, None,
        "IP-Adapter: Hub id (h94/IP-Adapter, or h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors), a folder "
        "holding ip-adapter_sd15.safetensors or ip-adapter-plus_sd15.safetensors, or the file.",
        REQUEST, empty="off", commands=RUNS, shapes_picture=True,
    ),
    Option(
        "ip_image", list, None, "IP-Adapter: a picture the image should follow; repeat for several.", REQUEST,
        field_name="ip_images", commands=RUNS, shapes_picture=True, needs="ip_adapter",
    ),
    Option(
        "ip_scale", float, 1.0, "IP-Adapter: how strongly its images steer (diffusers' set_ip_adapter_scale).",
        REQUEST, commands=RUNS, shapes_picture=True, needs="ip_adapter",
    ),
    Option(
        "ip_encoder", str, None, "IP-Adapter: the image encoder's folder (a CLIPVisionModelWithProjection).",
        REQUEST, empty="image_encoder beside the adapter's file", path=True, commands=RUNS, shapes_picture=True,
        needs="ip_adapter",
    ),
)
