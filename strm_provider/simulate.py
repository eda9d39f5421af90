"""Random clickstream events (``strm simulate random-events``, the demo): what a web shop's tracker sends."""

from __future__ import annotations

import base64
import random
import time
import uuid
from typing import Any

URLS = [
    "https://www.strmprivacy.io/",
    "https://www.strmprivacy.io/rules",
    "https://www.strmprivacy.io/pricing",
    "https://www.strmprivacy.io/blog",
    "https://www.strmprivacy.io/docs",
]
EVENT_TYPES = ["", "click", "view", "scroll", "purchase"]
REFERRERS = ["", "https://www.google.com/", "https://news.ycombinator.com/", "https://twitter.com/"]
USER_AGENTS = [
    "",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1",
]


def _token(rng: random.Random, size: int) -> str:
    return base64.b64encode(rng.randbytes(size)).decode()


def random_event(rng: random.Random, billing_id: str = "demo8542234275", now_ms: int | None = None) -> dict[str, Any]:
    """One event with a clickstream's fields: ``strmMeta`` (schemaId, nonce, timestamp, keyLink,
    billingId, consentLevels), producerSessionId, url, eventType, referrer, userAgent, conversion,
    customer.id, abTests."""
    return {
        "strmMeta": {
            "schemaId": "clickstream",
            "nonce": rng.randrange(1 << 31),
            "timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
            "keyLink": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "billingId": billing_id,
            "consentLevels": sorted(rng.sample([0, 1, 2, 3], rng.randint(0, 3))),
        },
        "producerSessionId": _token(rng, 32),
        "url": rng.choice(URLS),
        "eventType": rng.choice(EVENT_TYPES),
        "referrer": rng.choice(REFERRERS),
        "userAgent": rng.choice(USER_AGENTS),
        "conversion": rng.choice([0, 0, 0, 1]),
        "customer": {"id": _token(rng, 40)},
        "abTests": rng.sample(["header-a", "header-b", "cta-green", "cta-red"], rng.randint(0, 2)),
    }
