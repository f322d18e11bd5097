from pathlib import Path

import pytest
from pydantic import ValidationError

from jobs.context import LocalContext
from jobs.tensor_anatomy import KIND


@pytest.mark.parametrize("seed", [0, 1])
def test_smoke_describes_every_shape_and_dtype(tmp_path: Path, seed: int) -> None:
    ctx = LocalContext(artifacts_root=tmp_path, job_id=1, seed=seed)
    params = KIND.validate({"shapes": [[2, 3, 4], []], "dtypes": ["float64", "uint8"]})
    result = KIND.run(params, ctx)
    first = result["tensors"][0]
    assert first["rank"] == 3 and first["axes"] == [0, 1, 2]
    assert first["shape"] == [2, 3, 4]
    assert first["strides"] == [12, 4, 1]  # row-major: the last axis is contiguous
    assert first["numel"] == 24 and first["bytes"] == 24 * 8
    assert result["tensors"][1]["dtype"] == "uint8" and result["tensors"][1]["bytes"] == 24
    scalar = result["tensors"][2]
    assert scalar["rank"] == 0 and scalar["shape"] == [] and scalar["numel"] == 1
    assert len(ctx.recorded.progress) == 4


def test_numpy_round_trip_shares_memory(ctx: LocalContext) -> None:
    trip = KIND.run(KIND.validate({}), ctx)["numpy_round_trip"]
    assert trip["from_numpy_shares_memory"] and trip["numpy_back_shares_memory"]
    assert trip["same_data_ptr"] and trip["torch_tensor_copies"]
    assert trip["array_after"] == [7.0, 5.0, 0.0, 0.0]


def test_views_unsqueeze_and_errors_are_data(ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), ctx)
    assert result["views"]["transposed"]["strides"] == [1, 3]
    assert result["views"]["shares_storage"] is True
    assert {u["op"]: u["to"] for u in result["unsqueeze"]}["unsqueeze(0)"] == [1, 3]
    errors = {e["op"]: e for e in result["dtype_errors"]}
    assert "can't be cast" in errors["int64 += float32 (in place)"]["error"]
    assert errors["int64 + float32 (promotes)"]["error"] is None
    assert errors["int64 + float32 (promotes)"]["result"]["dtype"] == "float32"
    assert "dimensions" in errors["torch.cat([3], [2,2])"]["error"]
    assert result["device_errors"] == [{"op": "cpu + cuda", "operands": [], "error": "skipped: no GPU"}]


@pytest.mark.parametrize(
    "raw",
    [
        {"colour": "red"},
        {"shapes": [[1025]]},
        {"shapes": [[-1]]},
        {"shapes": [[1, 1, 1, 1, 1, 1, 1]]},
        {"shapes": [[1024, 1024, 2]]},
        {"dtypes": ["complex128"]},
    ],
)
def test_params_reject_unknown_and_out_of_range(raw: dict) -> None:
    with pytest.raises(ValidationError):
        KIND.validate(raw)


@pytest.mark.gpu
def test_on_gpu_mixing_devices_is_an_error(gpu_ctx: LocalContext) -> None:
    result = KIND.run(KIND.validate({}), gpu_ctx)
    assert result["tensors"][0]["device"] == "cuda:0"
    errors = {e["op"]: e["error"] for e in result["device_errors"]}
    assert "same device" in errors["cpu + cuda"]
    assert errors["cuda + cpu 0-dim"] is None
