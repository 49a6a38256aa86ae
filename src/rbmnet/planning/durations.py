"""Durations as users write them (`90s`, `30m`, `2h`, `1d`, `1h30m`) and as rbmnet prints them."""
from __future__ import annotations

import math
import re

from rbmnet.errors import RbmnetError

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ACCEPTED_FORMS = "a number with a unit s, m, h or d, e.g. 90s, 30m, 2h, 1d or 1h30m"
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str, option: str = "--time-budget") -> float:
    """'1h30m' -> 5400.0 seconds; anything else (no unit, zero, negative, garbage) is a one-line error."""
    cleaned = str(text).strip().lower().replace(" ", "")
    parts = _PART.findall(cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise RbmnetError(f"{option} '{text}' is not a duration: use {ACCEPTED_FORMS}")
    seconds = sum(float(number) * UNIT_SECONDS[unit] for number, unit in parts)
    if seconds <= 0:
        raise RbmnetError(f"{option} '{text}' must be longer than zero: use {ACCEPTED_FORMS}")
    return seconds


def format_duration(seconds: float) -> str:
    """750 -> '12 m 30 s'; 5400 -> '1 h 30 m'; 42.4 -> '42 s'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def deviation(predicted: float, actual: float) -> float:
    """Relative difference of the actual duration to the predicted one (+0.05 = took 5 % longer)."""
    return (actual - predicted) / predicted if predicted > 0 else math.inf


def predicted_vs_actual(predicted: float, actual: float) -> str:
    """'predicted 12 m 30 s, took 13 m 05 s (+5 %)'."""
    return (f"predicted {format_duration(predicted)}, took {format_duration(actual)} "
            f"({deviation(predicted, actual):+.0%})").replace("%)", " %)")
