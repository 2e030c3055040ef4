"""The aligner's 11 languages, accepted by English name (any case) or by code."""

from __future__ import annotations

# Canonical names, as upstream ``align(language=...)`` takes them, keyed by code.
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
_LOOKUP: dict[str, str] = {
    **{code: name for code, name in LANGUAGES_BY_CODE.items()},
    **{name.lower(): name for name in LANGUAGES_BY_CODE.values()},
}


def resolve_language(value: str) -> str:
    """Return the canonical English name for a language name or code.

    Raises ``ValueError`` listing what is accepted when ``value`` is not one of them.
    """
    key = value.strip().lower()
    try:
        return _LOOKUP[key]
    except KeyError:
        accepted = ", ".join(f"{name} ({code})" for code, name in LANGUAGES_BY_CODE.items())
        raise ValueError(f"unsupported language {value!r}; use one of: {accepted}") from None
