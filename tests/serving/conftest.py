"""One LiteLLM gateway per test session for every tests/serving/test_gateway*.py module (it takes
a minute to start on a busy CPU), with a cut-stream route behind it (tests/fixtures/gateway.py)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from compare.serving import weights as models
from tests.fixtures.gateway import LiteLLMGateway
from tests.fixtures.proxy import FaultProxy


@pytest.fixture(scope="session")
def cut_proxy(server_url: str) -> Iterator[FaultProxy]:
    """The session's vLLM behind a proxy that cuts every chat's answer a few chunks in: the
    upstream of the gateway's CUT_ALIAS. LiteLLM cannot be told to cut its own stream; what it
    does when its upstream's is cut is what a gateway does in production, so the cut is below it."""
    with FaultProxy(urlparse(server_url).port or 80, mode="cut", cut_after=700) as cut:
        yield cut


@pytest.fixture(scope="session")
def gateway(server_url: str, cut_proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[LiteLLMGateway]:
    with LiteLLMGateway(server_url, models.DEFAULT_MODEL, tmp_path_factory.mktemp("litellm"),
                        cut_upstream=cut_proxy.url) as gw:
        yield gw
