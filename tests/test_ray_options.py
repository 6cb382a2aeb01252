"""The Ray options without starting Ray: --ray's address, --workers, --gather, --replicas and the autoscaling
bounds, their refusals (one line, exit 2, before any weights load), and how many workers a cluster holds."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.cli.app import with_flag_values
from sdgen.errors import InvalidRequestError, UsageError
from sdgen.hardware import ray_cluster
from sdgen.hardware.ray_cluster import WorkerShape, is_address, is_loopback, parse_address, worker_shape
from sdgen.runs.batch.ray_run import RayOptions
from sdgen.serve.ray_serve import Replicas

runner = CliRunner()


@pytest.mark.parametrize(
    "text, address",
    [(None, None), ("local", None), ("LOCAL", None), ("auto", "auto"), ("10.0.0.5:6379", "10.0.0.5:6379"),
     ("ray://head:10001", "ray://head:10001"), ("[::1]:6379", "[::1]:6379")],
)
def test_ray_addresses(text, address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["head", "ray://head", "head:0", "head:99999", "http://head:80"])
def test_bad_ray_addresses_name_the_forms(text) -> None:
    with pytest.raises(InvalidRequestError, match="Invalid ray .*local, auto, ray://HOST:PORT"):
        parse_address(text)


def test_ray_alone_starts_a_local_cluster_and_takes_no_file_name() -> None:
    assert with_flag_values(["batch", "--ray", "p.txt"]) == ["batch", "--ray", "local", "p.txt"]
    assert with_flag_values(["batch", "p.txt", "--ray"]) == ["batch", "p.txt", "--ray", "local"]
    assert with_flag_values(["batch", "--ray", "auto", "p.txt"]) == ["batch", "--ray", "auto", "p.txt"]
    assert with_flag_values(["batch", "--ray", "h:6379"]) == ["batch", "--ray", "h:6379"]
    assert is_address("ray://h:1") and not is_address("prompts.jsonl")


def test_loopback_addresses() -> None:
    assert is_loopback(None) and is_loopback("127.0.0.1:6379") and is_loopback("localhost:1")
    assert not is_loopback("10.0.0.5:6379") and not is_loopback("auto")


def test_worker_shape_follows_the_cluster() -> None:
    assert worker_shape([{"CPU": 16, "GPU": 2}, {"CPU": 8, "GPU": 1}], None) == WorkerShape(3, 1.0, 1.0)
    assert worker_shape([{"CPU": 16}, {"CPU": 8}], None) == WorkerShape(6, 4.0, 0.0)  # 4 threads each
    assert worker_shape([{"CPU": 1}, {"CPU": 1}], None) == WorkerShape(2, 1.0, 0.0)
    assert worker_shape([{"CPU": 8}], 2) == WorkerShape(2, 4.0, 0.0)
    with pytest.raises(InvalidRequestError, match="Invalid workers 3: the cluster has 2 GPUs"):
        worker_shape([{"CPU": 4, "GPU": 2}], 3)
    with pytest.raises(InvalidRequestError, match="Invalid workers 5: the cluster has 4 CPUs"):
        worker_shape([{"CPU": 2}, {"CPU": 2}], 5)


def test_ray_options_refusals() -> None:
    assert RayOptions.from_values({"ray": None}) is None
    assert RayOptions.from_values({"ray": "auto", "workers": 3, "gather": True}) == RayOptions("auto", 3, True)
    with pytest.raises(InvalidRequestError, match="workers needs --ray"):
        RayOptions.from_values({"ray": None, "workers": 2})
    with pytest.raises(InvalidRequestError, match="Invalid workers 0"):
        RayOptions.from_values({"ray": "local", "workers": 0})


def test_replicas_refusals_and_deployment() -> None:
    assert Replicas.from_values({}) is None
    assert Replicas(2).deployment_options(32) == {"num_replicas": 2, "max_ongoing_requests": 33}
    scaled = Replicas.from_values({"replicas": 2, "min_replicas": 1, "max_replicas": 4}).deployment_options(None)
    assert scaled["autoscaling_config"]["min_replicas"] == 1 and scaled["autoscaling_config"]["max_replicas"] == 4
    for values, message in [
        ({"min_replicas": 1}, "min_replicas needs --replicas"),
        ({"replicas": 0}, "Invalid replicas 0: 1 or more"),
        ({"replicas": 2, "max_replicas": 3}, "needs both --min-replicas and --max-replicas"),
        ({"replicas": 5, "min_replicas": 1, "max_replicas": 4}, "Invalid replicas 5: autoscaling starts within"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            Replicas.from_values(values)


def test_cli_refuses_before_loading(tmp_path, no_weights_load) -> None:
    source = tmp_path / "p.txt"
    source.write_text("a fox\n")
    result = runner.invoke(app, ["batch", str(source), "--workers", "2", "-o", f"{tmp_path}/out/"])
    assert result.exit_code == 2
    assert result.stderr == "sdgen: error: --workers needs --ray: it says how the Ray workers run.\n"
    result = runner.invoke(app, ["batch", str(source), "--ray", "head:0"])
    assert result.exit_code == 2 and "Invalid --ray 'head:0'" in result.stderr
    result = runner.invoke(app, ["serve", "--min-replicas", "1"])
    assert result.exit_code == 2 and "--min-replicas needs --replicas" in result.stderr


def test_missing_extra_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ray" else object())
    with pytest.raises(UsageError, match=r'Ray is not installed: pip install "sdgen\[ray\]"'):
        ray_cluster.require_ray()
