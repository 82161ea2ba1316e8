"""A real V2 client (tritonclient's HTTP client) against a real uvicorn server in a thread."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.serving import test_app
from tests.serving.test_app import Served, real_server

httpclient = pytest.importorskip("tritonclient.http")


served = test_app.served  # the module fixture: the served project, built once here


@pytest.fixture(scope="module")
def url(served: Served) -> Iterator[str]:
    with real_server(served) as port:
        yield f"127.0.0.1:{port}"


def test_tritonclient_reads_health_metadata_and_infers(url: str, served: Served) -> None:
    client = httpclient.InferenceServerClient(url=url)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("fraud")
        meta = client.get_model_metadata("fraud")
        assert meta["versions"] == ["1"]
        assert [i["name"] for i in meta["inputs"]] == ["user_id", "amount"]

        user_id = httpclient.InferInput("user_id", [2], "INT64")
        user_id.set_data_from_numpy(np.array([1, 2], dtype=np.int64), binary_data=False)
        amount = httpclient.InferInput("amount", [2, 1], "FP64")
        amount.set_data_from_numpy(np.array([[20.0], [8.0]]), binary_data=False)
        result = client.infer("fraud", [user_id, amount], request_id="r-7")
        expected = [served.expected_fraud(1, 20.0), served.expected_fraud(2, 8.0)]
        assert result.as_numpy("probability").tolist() == pytest.approx(expected)
        assert result.get_response()["id"] == "r-7"

        # tritonclient's default: tensors in the binary extension after the JSON header.
        a = httpclient.InferInput("a", [2], "FP32")
        a.set_data_from_numpy(np.array([0.9, 0.1], dtype=np.float32))
        b = httpclient.InferInput("b", [2], "FP32")
        b.set_data_from_numpy(np.array([0.1, 0.8], dtype=np.float32))
        output = httpclient.InferRequestedOutput("probability", binary_data=False)
        binary = client.infer("plain", [a, b], outputs=[output])
        frame = np.array([[0.9, 0.1], [0.1, 0.8]], dtype=np.float32).astype(np.float64)
        import pandas as pd

        plain_expected = served.plain.predict_proba(pd.DataFrame(frame, columns=["a", "b"]))
        assert binary.as_numpy("probability").tolist() == pytest.approx(list(plain_expected[:, 1]))
    finally:
        client.close()


def test_tritonclient_sees_a_4xx_for_an_unknown_model(url: str) -> None:
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=url)
    try:
        with pytest.raises(InferenceServerException, match="'nope'"):
            client.get_model_metadata("nope")
        assert not client.is_model_ready("nope")
    finally:
        client.close()
