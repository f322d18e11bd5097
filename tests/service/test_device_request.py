"""Device requests: every accepted form, and a clear refusal naming the field and value."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.scheduling.device_request import DeviceRequest, parse_device_request, parse_worker_device


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cpu", DeviceRequest(kind="cpu")),
        ("GPU", DeviceRequest(kind="cuda")),
        ("cuda:2", DeviceRequest(kind="cuda", device_id="lab1/cuda:2")),
        ("lab2/cuda:0", DeviceRequest(kind="cuda", device_id="lab2/cuda:0")),
        ("lab2/cpu", DeviceRequest(kind="cpu", device_id="lab2/cpu")),
        ("cpu:1", DeviceRequest(kind="cpu", device_id="lab1/cpu:1")),
        ("lab2/CPU:3", DeviceRequest(kind="cpu", device_id="lab2/cpu:3")),
        ("model=H100", DeviceRequest(kind="cuda", model="H100")),
        ("min_memory_gb=40", DeviceRequest(kind="cuda", min_memory_gb=40.0)),
        ("model=A100, min_memory_gb=70", DeviceRequest(kind="cuda", model="A100", min_memory_gb=70.0)),
    ],
)
def test_forms(text: str, expected: DeviceRequest) -> None:
    parsed = parse_device_request(text, default_host="lab1")
    assert parsed == expected
    assert parse_device_request(parsed.canonical(), default_host="other") == expected


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "min_memory_gb=-1", "min_memory_gb=lots", "colour=red", "/cpu"])
def test_refusals_name_field_and_value(text: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_device_request(text, default_host="lab1")
    assert (err.value.field, err.value.value) == ("device", text)


def test_matching() -> None:
    h100 = {"device_id": "a/cuda:0", "kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559}
    cpu = {"device_id": "a/cpu", "kind": "cpu", "name": "CPU", "memory_total_mb": 1000}
    assert DeviceRequest(kind="cuda", model="h100").matches(**h100)
    assert not DeviceRequest(kind="cuda", model="A100").matches(**h100)
    assert DeviceRequest(kind="cuda", min_memory_gb=79).matches(**h100)
    assert not DeviceRequest(kind="cuda", min_memory_gb=80).matches(**h100)
    assert not DeviceRequest(kind="cuda").matches(**cpu)
    assert DeviceRequest(kind="cpu").matches(**cpu)


def test_stored_columns_give_back_the_parsed_request() -> None:
    for text in ("cpu", "gpu", "cuda:2", "lab2/cpu:1", "model=A100,min_memory_gb=70"):
        parsed = parse_device_request(text, default_host="lab1")
        columns = parsed.columns()
        assert columns["device_request"] == parsed.canonical()
        stored = DeviceRequest.from_columns(columns["request_kind"], columns["request_device_id"],
                                            columns["request_model"], columns["request_min_memory_gb"])
        assert stored == parsed


@pytest.mark.parametrize(("text", "expected"), [("cpu", ("cpu", None)), ("cpu:1", ("cpu", 1)),
                                                ("CUDA:3", ("cuda", 3)), ("lab1/cuda:0", ("cuda", 0))])
def test_worker_device_uses_the_same_grammar(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_worker_device(text, host="lab1") == expected


@pytest.mark.parametrize("text", ["gpu", "model=H100", "lab2/cuda:0", "tpu"])
def test_worker_device_must_name_one_device_of_its_host(text: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_worker_device(text, host="lab1")
    assert (err.value.field, err.value.value) == ("device", text)
