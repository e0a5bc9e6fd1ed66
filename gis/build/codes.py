"""How a pack's codes are made from a source's names: ASCII, lower case, words joined by hyphens.

Codes become database keys, Kafka keys and parts of unit codes (``water.kallio``), so they must pass
``domain.organization.check_identifier``; names keep their accents, codes do not.
"""

from __future__ import annotations

import re
import unicodedata

from domain.organization import check_identifier

_NOT_WORD = re.compile(r"[^a-z0-9]+")
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "đ": "d", "ł": "l"})


def code_from_name(name: str) -> str:
    """``"Côte-des-Neiges–Notre-Dame-de-Grâce"`` → ``"cote-des-neiges-notre-dame-de-grace"``."""
    # Strip accents but keep every other separator (en dashes, apostrophes) as a word break.
    decomposed = unicodedata.normalize("NFKD", name.lower().translate(_LIGATURES))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    code = _NOT_WORD.sub("-", bare).strip("-")
    return check_identifier(code, what="code")


def joined_code(*parts: str) -> str:
    """A hierarchical code such as ``keskusta.kluuvi``, checked to be a valid identifier (at most 64 chars)."""
    return check_identifier(".".join(parts), what="code")
