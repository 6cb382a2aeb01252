"""sdgen serve under an OpenAPI fuzzer: schemathesis reads the schema the server publishes and sends each route
a handful of generated requests, some that fit the schema and some that do not; no answer may be a 5xx, and every
answer, errors included, must be one the schema declares for that route, with a body that matches it. In process,
over the tiny model, with --api-auth on and limits so small that what gets through generates in a moment."""

from __future__ import annotations

import base64

import pytest

from sdgen.engine.request import ModelSpec
from sdgen.serve.app import create_app
from sdgen.serve.engine import Engine, Limits

from .serving import make_engine

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra installs schemathesis on Python 3.11+")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402 (hypothesis comes with schemathesis)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

USERS = {"fuzz": "pw"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"fuzz:pw").decode()}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12  # per route and mode: enough to reach every field's checks, quick on two cores


def _operations() -> list[tuple[str, str]]:
    """Every route of the published schema (the app's routes need no model to be listed)."""
    paths = create_app(Engine({}, ModelSpec(model="listing-only")), USERS).openapi()["paths"]
    return [(method.upper(), path) for path, item in paths.items() for method in item]


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir, hf_home):
    limits = Limits(max_pixels=64 * 64, max_steps=2, max_batch=2, max_queue=4)
    engine = make_engine(tiny_model_dir, limits, steps=2, width=64, height=64)  # a body with no size generates
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(engine, USERS), headers=AUTH)
    engine.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_request_gets_a_5xx_and_every_answer_matches_the_schema(api_schema, method, path, mode) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case) -> None:
        case.call_and_validate(headers=AUTH, checks=CHECKS, timeout=300)  # a slow shared machine is not a failure

    fuzz()
