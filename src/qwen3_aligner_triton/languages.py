"""The aligner's 11 languages, accepted by English name (any case), ISO 639 code or BCP-47 tag.

Codes: ISO 639-1 (``en``), ISO 639-2/T and 639-3 (``eng``), ISO 639-2/B (``fre``, ``ger``,
``chi``), and ``cmn`` (Mandarin) for Chinese. A BCP-47 tag (``en-US``, ``zh-Hans``,
``pt_BR``, ``yue-HK``) is read by its language subtag; the script, region and variant subtags
that follow do not change which of the 11 languages it is. Cantonese is ``yue`` (also the old
extended form ``zh-yue``); ``zh-HK`` and ``zh-TW`` are Chinese written in Hong Kong or Taiwan.
"""

from __future__ import annotations

import re

# Canonical names, as upstream ``align(language=...)`` takes them, keyed by ISO 639-1 code
# (Cantonese has none: its ISO 639-3 code).
LANGUAGES_BY_CODE: dict[str, str] = {
    "zh": "Chinese",
    "en": "English",
    "yue": "Cantonese",
    "fr": "French",
    "de": "German",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "pt": "Portuguese",
    "ru": "Russian",
    "es": "Spanish",
}
# ISO 639-2/T and 639-3 codes, the 639-2/B ones where they differ, and Mandarin.
THREE_LETTER_CODES: dict[str, str] = {
    "zho": "Chinese",
    "chi": "Chinese",
    "cmn": "Chinese",
    "eng": "English",
    "fra": "French",
    "fre": "French",
    "deu": "German",
    "ger": "German",
    "ita": "Italian",
    "jpn": "Japanese",
    "kor": "Korean",
    "por": "Portuguese",
    "rus": "Russian",
    "spa": "Spanish",
}
_LOOKUP: dict[str, str] = {
    **LANGUAGES_BY_CODE,
    **THREE_LETTER_CODES,
    **{name.lower(): name for name in LANGUAGES_BY_CODE.values()},
}
# BCP-47: a language subtag of 2-3 letters, then subtags of 1-8 letters or digits ("_" as in
# POSIX locales is taken for "-").
_TAG = re.compile(r"^([a-z]{2,3})((?:-[a-z0-9]{1,8})*)$")


def resolve_language(value: str) -> str:
    """Return the canonical English name for a language name, code or BCP-47 tag.

    Raises ``ValueError`` listing what is accepted when ``value`` is none of them.
    """
    key = value.strip().lower()
    name = _LOOKUP.get(key)
    if name is None:
        tag = _TAG.match(key.replace("_", "-"))
        if tag is not None:
            language, rest = tag.group(1), tag.group(2).split("-")[1:]
            name = "Cantonese" if language == "zh" and rest[:1] == ["yue"] else None
            name = name or LANGUAGES_BY_CODE.get(language) or THREE_LETTER_CODES.get(language)
    if name is None:
        accepted = ", ".join(f"{name} ({code})" for code, name in LANGUAGES_BY_CODE.items())
        raise ValueError(
            f"unsupported language {value!r}; use one of: {accepted} (or an ISO 639-3 code or "
            "a BCP-47 tag of one of them, such as eng or en-US)"
        )
    return name
