"""On a lent GPU: a command job sees exactly its own GPU, by UUID, in CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.commands import command_stack
from tests.support.stack import Stack
from worker.device import count_gpus, gpu_info

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_stack() -> Iterator[Stack]:
    if count_gpus() == 0:
        pytest.skip("needs a CUDA GPU (run on a lent GPU machine)")
    for stack in command_stack("sqlite"):
        stack.add_worker("cuda:0")
        yield stack


SHOW = ("import json, os; print('GPULAB ' + json.dumps({'result': {k: os.environ.get(k) for k in "
        "('CUDA_VISIBLE_DEVICES', 'CUDA_DEVICE_ORDER')}}))")


def test_cuda_visible_devices_holds_exactly_the_jobs_gpu(gpu_stack: Stack) -> None:
    expected = gpu_info("testhost", 0).uuid
    job = gpu_stack.submit("command", {"argv": ["/usr/bin/python3", "-c", SHOW]}, device="cuda:0")
    done = gpu_stack.wait_for(job["id"], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["CUDA_VISIBLE_DEVICES"] == expected and expected.startswith("GPU-")
    assert done["result"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    cpu = gpu_stack.wait_for(gpu_stack.submit("command", {"argv": ["/usr/bin/python3", "-c", SHOW]})["id"])
    assert cpu["result"]["CUDA_VISIBLE_DEVICES"] == ""  # a CPU job sees no GPU
