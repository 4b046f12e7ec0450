"""The per-account limits hold across real processes, on both backends.

Several forked processes hammer one account at once; every grant is recorded with the clock
reading the limiter used, and afterwards every sliding window is checked: never more than the
limit in any window, never more unique recipients than the quota.
"""

import datetime as dt
import multiprocessing
import random
import time
import types

import pytest

from channels import ratelimit

PROCESSES = 4
SECONDS = 2.5


def _account(pk: int, *, rate: float, quota: int | None = None, window: str = "calendar_day", zone: str = "UTC"):
    """Just the fields the limiter reads: no database in the child processes."""
    brand = types.SimpleNamespace(time_zone=zone)
    return types.SimpleNamespace(pk=pk, rate_per_second=rate, daily_quota=quota, quota_window=window, brand=brand)


def _hammer(account, seed: int, recipients: int, out) -> None:
    rng = random.Random(seed)
    grants = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        batch = [f"+1555{rng.randrange(recipients):07d}" for _ in range(rng.randint(1, 7))]
        at, granted = ratelimit.acquire_timed(account, batch)
        grants.extend((at, who) for who in granted)
        time.sleep(rng.random() * 0.004)
    out.put(grants)


def _run(account, recipients: int) -> list[tuple[float, str]]:
    ratelimit._BACKENDS.clear()  # each child opens its own connection after the fork
    ratelimit.reset(account)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    children = [context.Process(target=_hammer, args=(account, seed, recipients, out)) for seed in range(PROCESSES)]
    for child in children:
        child.start()
    grants = [grant for _ in children for grant in out.get(timeout=60)]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    return sorted(grants)


def _busiest_window(grants: list[tuple[float, str]], window: float) -> int:
    """The most grants in any half-open window (t - window, t]."""
    times = [at for at, _ in grants]
    busiest, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - window:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


@pytest.fixture(params=["redis", "file"])
def backend(request, settings, tmp_path):
    if request.param == "file":
        settings.REDIS_URL = ""
        settings.VAR_DIR = tmp_path
    ratelimit._BACKENDS.clear()
    yield request.param
    ratelimit._BACKENDS.clear()


def test_rate_is_never_exceeded_in_any_window_across_processes(backend):
    account = _account(9001, rate=40)
    grants = _run(account, recipients=10**6)
    window, limit = ratelimit.rate_window(account.rate_per_second)
    assert (window, limit) == (1.0, 40)
    assert _busiest_window(grants, window) <= limit
    # The processes did contend and the limiter did hand out (nearly) its full rate.
    assert len(grants) >= limit * (SECONDS - 1)


def test_quota_counts_unique_recipients_across_processes(backend):
    account = _account(9002, rate=1000, quota=25, window="rolling_24h")
    grants = _run(account, recipients=60)
    assert len({who for _, who in grants}) == 25
    # A recipient already counted costs nothing more: they keep being granted.
    assert len(grants) > 25
    assert ratelimit.capacity(account) == 0


def test_slow_rates_use_a_longer_window(backend):
    assert ratelimit.rate_window(0.5) == (2.0, 1)
    account = _account(9003, rate=0.5)
    ratelimit.reset(account)
    assert ratelimit.acquire(account, ["a", "b"], now=1000.0) == ["a"]
    assert ratelimit.acquire(account, ["b"], now=1001.9) == []
    assert ratelimit.acquire(account, ["b"], now=1002.01) == ["b"]


def test_calendar_quota_resets_at_local_midnight_even_on_a_dst_day(backend):
    account = _account(9004, rate=100, quota=2, zone="Europe/Berlin")
    ratelimit.reset(account)
    # 2026-03-29 is 23 hours long in Berlin (clocks go forward at 02:00).
    morning = dt.datetime(2026, 3, 29, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert ratelimit.acquire(account, ["a", "b", "c"], now=morning) == ["a", "b"]
    reset_at = ratelimit.quota_reset_at(account, morning)
    assert reset_at == dt.datetime(2026, 3, 29, 22, 0, tzinfo=dt.UTC)  # midnight in Berlin (CEST)
    assert ratelimit.acquire(account, ["c"], now=reset_at - dt.timedelta(seconds=1)) == []
    assert ratelimit.acquire(account, ["c"], now=reset_at) == ["c"]


def test_rate_free_in_says_when_a_full_window_frees_and_nothing_while_there_is_room(backend):
    account = _account(9101, rate=3)
    ratelimit.reset(account)
    assert ratelimit.rate_free_in(account, now=1000.0) is None
    assert ratelimit.acquire(account, ["a", "b"], now=1000.0) == ["a", "b"]
    assert ratelimit.rate_free_in(account, now=1000.1) is None  # one slot left
    assert ratelimit.acquire(account, ["c", "d"], now=1000.25) == ["c"]
    assert ratelimit.rate_free_in(account, now=1000.5) == pytest.approx(0.5)  # "a" and "b" leave at 1001.0
    assert ratelimit.rate_free_in(account, now=1001.1) is None
    ratelimit.reset(account)
