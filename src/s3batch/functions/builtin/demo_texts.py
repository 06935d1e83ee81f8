"""Three short original texts for `s3batch demo` and the sentiment tests.

Each is written to land clearly in one class under the built-in sentiment function's
thresholds (VADER compound well past ±0.05, or exactly 0 for the speech).
"""

from __future__ import annotations

LOVE_POEM = """\
Your laugh is the morning light
that finds me before the sun does.
I love the quiet of your hand in mine,
the warm, patient kindness of your voice,
the way an ordinary Tuesday turns to gold
because you are in it.
Stay with me, dear heart, and every season
will be a gentle spring.
"""

RUDE_LOVE_LETTER = """\
To my so-called sweetheart,
People say a love letter should be tender, so here is the truth instead.
Your cooking is disgusting, your jokes are pathetic, and your singing sounds like
a dying goose. You are lazy, selfish and rude, you snore like a broken chainsaw,
and your friends are boring fools. An evening with you is a miserable, exhausting
waste of my time, and I hate every minute of it.
Yours, regrettably and with no affection at all,
Your long-suffering partner
"""

NEUTRAL_SPEECH = """\
Residents of Millbrook, this is an update on the town meeting schedule.
The council will meet on the first Tuesday of each month at 7 p.m. in Room 2 of the
municipal building on Main Street. The agenda is posted on the notice board five days
before each meeting. Residents may speak during the public comment period, which lasts
thirty minutes. Minutes of each meeting are published on the town website within ten days.
The March meeting will take place on March 4. Parking is behind the library.
"""

#: File name → text. The expected class is in the name's meaning: POSITIVE, NEGATIVE, NEUTRAL.
DEMO_TEXTS: dict[str, str] = {
    "love-poem.txt": LOVE_POEM,
    "rude-love-letter.txt": RUDE_LOVE_LETTER,
    "neutral-speech.txt": NEUTRAL_SPEECH,
}

#: What the built-in sentiment function says about each demo text.
EXPECTED_SENTIMENT: dict[str, str] = {
    "love-poem.txt": "POSITIVE",
    "rude-love-letter.txt": "NEGATIVE",
    "neutral-speech.txt": "NEUTRAL",
}
