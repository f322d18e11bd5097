"""The API's token cache: a lookup is trusted for its time and no longer, bounded, never shared."""

from __future__ import annotations

from service.api.tokens import TokenCache
from service.models import User


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ada() -> User:
    return User(id=7, name="ada", is_admin=False, unix_user="ada")


def test_a_lookup_is_trusted_for_its_time_from_the_lookup_not_from_the_last_use() -> None:
    clock = Clock()
    cache = TokenCache(2.0, clock=clock)
    cache.put("h", ada())
    for _ in range(3):  # used every 0.5 s: the entry is not renewed by use
        clock.now += 0.5
        assert cache.get("h") is not None
    clock.now += 0.5  # 2.0 s after the lookup
    assert cache.get("h") is None
    assert len(cache) == 0


def test_each_request_gets_its_own_copy_of_the_user() -> None:
    cache = TokenCache(2.0, clock=Clock())
    cache.put("h", ada())
    first, second = cache.get("h"), cache.get("h")
    assert first is not None and second is not None and first is not second
    first.name = "changed"
    assert (second.id, second.name, second.is_admin, second.unix_user) == (7, "ada", False, "ada")


def test_the_cache_is_bounded_and_forgets_the_oldest_lookup() -> None:
    cache = TokenCache(2.0, clock=Clock(), max_entries=3)
    for h in "abcd":
        cache.put(h, ada())
    assert len(cache) == 3
    assert cache.get("a") is None and cache.get("d") is not None


def test_a_zero_time_turns_the_cache_off() -> None:
    cache = TokenCache(0.0, clock=Clock())
    cache.put("h", ada())
    assert cache.get("h") is None
