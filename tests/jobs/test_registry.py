import json
import subprocess
import sys

import pytest
from pydantic import BaseModel

from jobs.base import JobKind
from jobs.registry import BUILTIN, get_kind, list_kinds


def test_listing_kinds_does_not_import_torch() -> None:
    code = (
        "import json, sys\n"
        "from jobs.registry import list_kinds\n"
        "kinds = [k.name for k in list_kinds()]\n"
        "minimal = {'command': {'argv': ['python', 'train.py']}}\n"
        "for k in list_kinds():\n"
        "    k.validate(minimal.get(k.name) or ({k.from_job_param: 1} if k.from_job_param else {}))\n"
        "print(json.dumps({'kinds': kinds, 'heavy': sorted(m for m in ('torch', 'numpy',"
        " 'matplotlib', 'sklearn') if m in sys.modules)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["kinds"][: len(BUILTIN)] == list(BUILTIN)
    assert report["heavy"] == []


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_kind_is_well_formed(name: str) -> None:
    kind = get_kind(name)
    assert isinstance(kind, JobKind)
    assert kind.name == name
    assert kind.params.model_config.get("extra") == "forbid"
    # The defaults are valid; a kind that starts from another job only needs that job's id,
    # and the command kind only its argv.
    required = {kind.from_job_param: 1} if kind.from_job_param else {}
    if name == "command":
        required = {"argv": ["python", "train.py"]}
    assert isinstance(kind.validate(required), BaseModel)


def test_builtin_kinds_come_first_in_learning_order() -> None:
    assert [k.name for k in list_kinds()][: len(BUILTIN)] == list(BUILTIN)
