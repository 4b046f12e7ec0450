"""Per-account sending limits that hold across every worker process.

Two limits, checked and taken together in one atomic step:

- **rate**: at most ``L`` grants in any sliding window of ``W`` seconds (``W = max(1, 1/rate)``,
  ``L = rate * W``): a sliding log, not a token bucket, because a bucket lets a full burst
  follow a full second and the provider would see twice its rate in some window;
- **quota**: unique recipients per calendar day (brand time zone) or per rolling 24 h (WhatsApp's
  business-initiated limit). A recipient already counted in the window costs nothing more.

Production uses Redis (one Lua script per call, so the check and the take are one operation);
without Redis (the embedded default) a file lock plus a small SQLite file in VAR_DIR holds across
the web, worker and beat processes of one machine. ``now`` may be injected (tests move the clock).
"""

import contextlib
import datetime as dt
import fcntl
import math
import sqlite3
import time
import zoneinfo
from pathlib import Path

from django.conf import settings

DAY = 86400.0

_LUA = """
-- KEYS[1]: rate log (zset of grant times)  KEYS[2]: quota (zset recipient -> first time)
-- ARGV: now (or '' for server time), window, limit, quota (or -1), quota_start, unused, recipients...
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window, limit, quota, quota_start = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local free = limit - redis.call('ZCARD', KEYS[1])
local used = 0
if quota >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. quota_start)
  used = redis.call('ZCARD', KEYS[2])
end
local granted = {}
-- Log members must be unique across every process: a server-side counter, never a client one.
local seq = redis.call('INCRBY', KEYS[1] .. ':seq', #ARGV) - #ARGV
for i = 7, #ARGV do
  if free <= 0 then break end
  local who = ARGV[i]
  local ok = true
  if quota >= 0 and not redis.call('ZSCORE', KEYS[2], who) then
    if used >= quota then ok = false else
      redis.call('ZADD', KEYS[2], now, who)
      used = used + 1
    end
  end
  if ok then
    seq = seq + 1
    redis.call('ZADD', KEYS[1], now, now .. ':' .. seq .. ':' .. i)
    free = free - 1
    granted[#granted + 1] = who
  end
end
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 5)
redis.call('EXPIRE', KEYS[1] .. ':seq', math.ceil(window) + 5)
if quota >= 0 then redis.call('EXPIRE', KEYS[2], 2 * 86400 + 60) end
return {tostring(now), granted}
"""

_CAPACITY_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local window, limit, quota, quota_start = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local in_window = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
local free = limit - in_window
if quota >= 0 then
  local used = redis.call('ZCOUNT', KEYS[2], quota_start, '+inf')
  free = math.min(free, quota - used)
end
return math.max(free, 0)
"""


def rate_window(rate: float) -> tuple[float, int]:
    """(window seconds, grants allowed per window) for a rate in messages per second."""
    rate = max(float(rate or 0), 0.001)
    window = max(1.0, 1.0 / rate)
    return window, max(1, math.floor(rate * window + 1e-9))


def _timestamp(now: dt.datetime | float | None) -> float | None:
    if now is None:
        return None
    return now.timestamp() if isinstance(now, dt.datetime) else float(now)


def quota_start(account, now: float) -> float:
    """Start of the quota window containing ``now`` (epoch seconds)."""
    if account.quota_window == "rolling_24h":
        return now - DAY
    zone = zoneinfo.ZoneInfo(account.brand.time_zone or "UTC")
    local = dt.datetime.fromtimestamp(now, zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def quota_reset_at(account, now: dt.datetime | None = None) -> dt.datetime:
    """When the quota frees up again: the next local midnight, or 24 h after the oldest grant."""
    moment = _timestamp(now) or time.time()
    if account.quota_window == "rolling_24h":
        oldest = _backend().oldest_quota_grant(account, moment)
        return dt.datetime.fromtimestamp((oldest or moment) + DAY, dt.UTC)
    return local_day(dt.datetime.fromtimestamp(moment, dt.UTC), account.brand.time_zone)[1]  # next local midnight


def local_day(now: dt.datetime, time_zone: str) -> tuple[dt.datetime, dt.datetime]:
    """The day of ``now`` in the brand's time zone, as [start, end) in UTC: the day a calendar-day
    quota counts, and a campaign's daily cap with it. By the calendar: a day is 23 or 25 hours long
    when the clocks change."""
    zone = zoneinfo.ZoneInfo(time_zone or "UTC")
    day = now.astimezone(zone).date()
    start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
    # In UTC: Python subtracts two times of one zone by their wall clocks, whatever the offsets.
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def acquire(account, recipients: list[str], now: dt.datetime | float | None = None) -> list[str]:
    """The recipients that may be sent to now, in order, never exceeding either limit."""
    return acquire_timed(account, recipients, now)[1]


def acquire_timed(account, recipients: list[str], now=None) -> tuple[float, list[str]]:
    """Like ``acquire``, also returning the clock reading the grants were recorded at."""
    if not recipients:
        return (_timestamp(now) or time.time()), []
    return _backend().acquire(account, [str(r) for r in recipients], _timestamp(now))


def capacity(account, now: dt.datetime | float | None = None) -> int:
    """How many new recipients could be granted right now (rate and quota both considered)."""
    return _backend().capacity(account, _timestamp(now))


def rate_free_in(account, now: dt.datetime | float | None = None) -> float | None:
    """Seconds until the rate window has room again, or None when it has room now (so a capacity
    of 0 then comes from the quota). Lets a dispatcher sleep until the moment a slot frees."""
    return _backend().rate_free_in(account, _timestamp(now))


def reset(account) -> None:
    _backend().reset(account)


# -- Redis ---------------------------------------------------------------------------------------------
class RedisBackend:
    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self.acquire_script = self.client.register_script(_LUA)
        self.capacity_script = self.client.register_script(_CAPACITY_LUA)

    @staticmethod
    def keys(account) -> list[str]:
        return [f"hub:rl:{account.pk}:rate", f"hub:rl:{account.pk}:quota"]

    def _args(self, account, now: float | None) -> list:
        window, limit = rate_window(account.rate_per_second)
        quota = account.daily_quota if account.daily_quota is not None else -1
        start = quota_start(account, now if now is not None else time.time()) if quota >= 0 else 0
        return ["" if now is None else repr(now), window, limit, quota, repr(start)]

    def acquire(self, account, recipients: list[str], now: float | None):
        used_now, granted = self.acquire_script(
            keys=self.keys(account), args=[*self._args(account, now), 0, *recipients]
        )
        return float(used_now), [g.decode() for g in granted]

    def capacity(self, account, now: float | None) -> int:
        return int(self.capacity_script(keys=self.keys(account), args=self._args(account, now)))

    def rate_free_in(self, account, now: float | None) -> float | None:
        window, limit = rate_window(account.rate_per_second)
        now = time.time() if now is None else now
        key = self.keys(account)[0]
        # The limit-th newest grant inside the window: when it leaves the window, a slot frees.
        rows = self.client.zrevrangebyscore(key, "+inf", f"({now - window}", start=limit - 1, num=1, withscores=True)
        return max(rows[0][1] + window - now, 0.0) if rows else None

    def oldest_quota_grant(self, account, now: float) -> float | None:
        rows = self.client.zrangebyscore(self.keys(account)[1], now - DAY, "+inf", start=0, num=1, withscores=True)
        return rows[0][1] if rows else None

    def reset(self, account) -> None:
        self.client.delete(*self.keys(account), self.keys(account)[0] + ":seq")


# -- file lock + SQLite (embedded default) ------------------------------------------------------------------
class FileBackend:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db_path = folder / "ratelimit.sqlite3"
        with self._locked() as db:
            db.execute("CREATE TABLE IF NOT EXISTS rate (account INTEGER, at REAL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS quota (account INTEGER, who TEXT, at REAL, PRIMARY KEY (account, who))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS rate_at ON rate (account, at)")

    @contextlib.contextmanager
    def _locked(self):
        with open(self.folder / "ratelimit.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            finally:
                db.close()
                fcntl.flock(lock, fcntl.LOCK_UN)

    def acquire(self, account, recipients: list[str], now: float | None):
        window, limit = rate_window(account.rate_per_second)
        with self._locked() as db:
            # The clock is read once the lock is held: a process that waited for it would
            # otherwise record its grants in the past, and a window could admit more than its limit.
            now = time.time() if now is None else now
            db.execute("DELETE FROM rate WHERE account = ? AND at <= ?", (account.pk, now - window))
            free = limit - db.execute("SELECT COUNT(*) FROM rate WHERE account = ?", (account.pk,)).fetchone()[0]
            quota = account.daily_quota
            start = quota_start(account, now)
            if quota is not None:
                db.execute("DELETE FROM quota WHERE account = ? AND at < ?", (account.pk, start))
                used = db.execute("SELECT COUNT(*) FROM quota WHERE account = ?", (account.pk,)).fetchone()[0]
            granted = []
            for who in recipients:
                if free <= 0:
                    break
                if quota is not None:
                    known = db.execute(
                        "SELECT 1 FROM quota WHERE account = ? AND who = ?", (account.pk, who)
                    ).fetchone()
                    if not known:
                        if used >= quota:
                            continue
                        db.execute("INSERT INTO quota VALUES (?, ?, ?)", (account.pk, who, now))
                        used += 1
                db.execute("INSERT INTO rate VALUES (?, ?)", (account.pk, now))
                free -= 1
                granted.append(who)
        return now, granted

    def capacity(self, account, now: float | None) -> int:
        window, limit = rate_window(account.rate_per_second)
        with self._locked() as db:
            now = time.time() if now is None else now
            count = db.execute(
                "SELECT COUNT(*) FROM rate WHERE account = ? AND at > ?", (account.pk, now - window)
            ).fetchone()[0]
            free = limit - count
            if account.daily_quota is not None:
                used = db.execute(
                    "SELECT COUNT(*) FROM quota WHERE account = ? AND at >= ?", (account.pk, quota_start(account, now))
                ).fetchone()[0]
                free = min(free, account.daily_quota - used)
        return max(free, 0)

    def rate_free_in(self, account, now: float | None) -> float | None:
        window, limit = rate_window(account.rate_per_second)
        with self._locked() as db:
            now = time.time() if now is None else now
            row = db.execute(
                "SELECT at FROM rate WHERE account = ? AND at > ? ORDER BY at DESC LIMIT 1 OFFSET ?",
                (account.pk, now - window, limit - 1),
            ).fetchone()
        return max(row[0] + window - now, 0.0) if row else None

    def oldest_quota_grant(self, account, now: float) -> float | None:
        with self._locked() as db:
            row = db.execute(
                "SELECT MIN(at) FROM quota WHERE account = ? AND at >= ?", (account.pk, now - DAY)
            ).fetchone()
        return row[0]

    def reset(self, account) -> None:
        with self._locked() as db:
            db.execute("DELETE FROM rate WHERE account = ?", (account.pk,))
            db.execute("DELETE FROM quota WHERE account = ?", (account.pk,))


_BACKENDS: dict = {}


def _backend():
    key = settings.REDIS_URL or str(settings.VAR_DIR)
    if key not in _BACKENDS:
        _BACKENDS[key] = (
            RedisBackend(settings.REDIS_URL)
            if settings.REDIS_URL
            else FileBackend(Path(settings.VAR_DIR) / "ratelimit")
        )
    return _BACKENDS[key]
