"""Time arithmetic for campaigns: crontab occurrences, local send times and quiet hours."""

import datetime as dt
import zoneinfo

from celery.schedules import crontab

QUIET_CHANNELS = ("sms", "whatsapp")  # never delivered inside the brand's quiet hours


def parse_crontab(expression: str) -> crontab:
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("a crontab has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month, day_of_week = parts
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month, day_of_week=day_of_week)


def crontab_error(expression: str) -> str | None:
    try:
        parse_crontab(expression or "")
    except (ValueError, TypeError) as exc:
        return f"Not a valid crontab ({exc})."
    return None


def in_quiet_hours(local: dt.time, start: dt.time | None, end: dt.time | None) -> bool:
    if start is None or end is None or start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end  # spans midnight, e.g. 21:00-08:00


def outside_quiet_hours(moment: dt.datetime, tz: str, start: dt.time | None, end: dt.time | None) -> dt.datetime:
    """``moment``, or the end of the quiet hours it falls into, in the contact's time zone."""
    zone = zoneinfo.ZoneInfo(tz or "UTC")
    local = moment.astimezone(zone)
    if not in_quiet_hours(local.time(), start, end):
        return moment
    candidate = local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if candidate <= local:
        candidate += dt.timedelta(days=1)
    return candidate.astimezone(dt.UTC)


def next_local_time(after: dt.datetime, tz: str, at: dt.time) -> dt.datetime:
    """The first moment at or after ``after`` when the wall clock in ``tz`` shows ``at``."""
    zone = zoneinfo.ZoneInfo(tz or "UTC")
    local = after.astimezone(zone)
    candidate = dt.datetime.combine(local.date(), at, tzinfo=zone)
    if candidate < local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=zone)
    return candidate.astimezone(dt.UTC)
