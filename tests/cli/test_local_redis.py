"""Which Redis `gpulab up` hands its parts (cli/local_redis.py), against real redis-servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cli.local_redis import plan_broker, start_local_redis
from service.settings import Settings
from tests.support import services
from tests.support.stack import free_port


@pytest.fixture
def named(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    url = f"redis://127.0.0.1:{free_port()}/0"
    yield url, Settings(state_dir=tmp_path, redis_url=url)


def test_a_named_url_where_none_answers_gets_up_s_own_redis_and_the_next_up_reuses_it(
        named: tuple[str, Settings], tmp_path: Path) -> None:
    url, settings = named
    first = plan_broker(settings)
    password = (tmp_path / "redis" / "password").read_text().strip()
    assert first.start and urlparse(first.url).password == password and "no Redis answers at" in first.note
    assert password not in first.note
    try:
        proc = start_local_redis(first.url, tmp_path / "redis")
    except RuntimeError as exc:
        services.unavailable(f"redis-server ({exc})")
    try:
        # up was killed and started again: its Redis, asking for the password, still runs there.
        again = plan_broker(Settings(state_dir=tmp_path, redis_url=url))
        assert (again.url, again.start, again.note) == (first.url, False, "")
        wrong = url.replace("//", "//:wrong@")
        with pytest.raises(RuntimeError, match="refuses the URL's password") as refused:
            plan_broker(Settings(state_dir=tmp_path / "other", redis_url=wrong))
        assert "wrong" not in str(refused.value)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not (tmp_path / "redis" / "url").exists()  # a URL the admin named is theirs to give


def test_a_named_redis_without_a_password_is_used_with_one_line_saying_so(tmp_path: Path) -> None:
    url = services.redis_url(14)
    broker = plan_broker(Settings(state_dir=tmp_path, redis_url=url))
    assert (broker.url, broker.start, broker.warn) == (url, False, True)
    assert "\n" not in broker.note and "members' command jobs" in broker.note and "requirepass" in broker.note


def test_the_settings_find_up_s_own_redis_unless_a_url_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPULAB_REDIS_URL", raising=False)
    own = "redis://:s3cret@127.0.0.1:6380/0"
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "url").write_text(own + "\n")
    found = Settings(state_dir=tmp_path)
    assert found.redis_url == own and not found.redis_url_chosen
    assert found.public()["redis_url"] == "redis://:***@127.0.0.1:6380/0"
    named = Settings(state_dir=tmp_path, redis_url="redis://10.0.0.5:6379/0")
    assert named.redis_url == "redis://10.0.0.5:6379/0" and named.redis_url_chosen
    assert Settings(state_dir=tmp_path / "elsewhere").redis_url == "redis://127.0.0.1:6379/0"
