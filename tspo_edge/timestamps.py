"""The timestamp a person reads for a moment in a video: one function, used by the prompt, the
command line, the API and (its twin in web/app.js) the web page.

It floors, as video players do: a moment at 73.6 s happens during second 01:13, and seeking a
player to the printed time lands just before the moment, never after it (rounding would print
01:14, past the frame). Negative times (none should reach here) print as 00:00.
"""

from __future__ import annotations

import math


def mmss(seconds: float) -> str:
    """73.6 -> "01:13"; an hour or more -> "1:02:03"."""
    s = max(0, math.floor(float(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"
