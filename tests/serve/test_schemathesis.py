"""Requests generated from the service's own OpenAPI schema (valid and invalid ones, JSON and
multipart, for every operation): never a server error, and every answer as the schema
describes it; with and without an API key."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from polymodal.serve.app import create_app
from polymodal.serve.schemas import ServeSettings

KEY = "s3cret"
CHECKS = [not_a_server_error, response_schema_conformance]
FEW = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", params=[None, KEY], ids=["open", "with-key"])
def api(request: pytest.FixtureRequest, served_model) -> schemathesis.BaseSchema:
    service = ServeSettings(
        model_dir=str(served_model.model_dir),
        index_dir=str(served_model.index_dir),
        data_dir=str(served_model.data_dir),
        api_key=request.param,
    )
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(service))


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_generated_requests_get_the_answers_the_schema_describes(api, mode) -> None:
    key = api.app.state.service.settings.api_key
    headers = {"X-API-Key": key} if key else None
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 10
    if mode is GenerationMode.NEGATIVE:  # what takes no input has no invalid input
        operations = [op for op in operations if op.body or any(op.iter_parameters())]
    for operation in operations:

        @FEW
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        call()
