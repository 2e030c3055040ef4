import pytest

from qwen3_aligner_triton.languages import LANGUAGES_BY_CODE, resolve_language


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("en", "English"),
        ("ENGLISH", "English"),
        (" japanese ", "Japanese"),
        ("yue", "Cantonese"),
        ("Ko", "Korean"),
        ("zh", "Chinese"),
    ],
)
def test_names_and_codes(given, expected):
    assert resolve_language(given) == expected


def test_all_eleven():
    assert len(LANGUAGES_BY_CODE) == 11
    for code, name in LANGUAGES_BY_CODE.items():
        assert resolve_language(code) == resolve_language(name.upper()) == name


@pytest.mark.parametrize(
    "bad",
    ["", "klingon", "Arabic", "english-us", "ar", "ara", "ar-SA", "en-", "-en", "en--US",
     "en-toolongsubtag", "e", "en US", "zh-", "nl-BE", "hak"],
)  # fmt: skip
def test_unsupported_is_rejected_with_the_list(bad):
    with pytest.raises(ValueError, match="Spanish \\(es\\)"):
        resolve_language(bad)


def test_the_refusal_names_the_value_and_lists_every_language_with_its_code():
    with pytest.raises(ValueError) as refused:
        resolve_language(" Klingon ")
    assert str(refused.value) == (
        "unsupported language ' Klingon '; use one of: Chinese (zh), English (en), "
        "Cantonese (yue), French (fr), German (de), Italian (it), Japanese (ja), Korean (ko), "
        "Portuguese (pt), Russian (ru), Spanish (es) (or an ISO 639-3 code or a BCP-47 tag of "
        "one of them, such as eng or en-US)"
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # ISO 639-2/T and 639-3, 639-2/B, Mandarin
        ("eng", "English"), ("ZHO", "Chinese"), ("chi", "Chinese"), ("cmn", "Chinese"),
        ("fra", "French"), ("fre", "French"), ("deu", "German"), ("ger", "German"),
        ("ita", "Italian"), ("jpn", "Japanese"), ("kor", "Korean"), ("por", "Portuguese"),
        ("rus", "Russian"), ("spa", "Spanish"), ("yue", "Cantonese"),
        # BCP-47 tags: region, script, both, variants, POSIX-style underscores, any case
        ("en-US", "English"), ("en-gb", "English"), ("zh-Hans", "Chinese"),
        ("zh-Hant-TW", "Chinese"), ("zh-HK", "Chinese"), ("cmn-Hans-CN", "Chinese"),
        ("yue-HK", "Cantonese"), ("yue-Hant-HK", "Cantonese"), ("zh-yue", "Cantonese"),
        ("zh-yue-HK", "Cantonese"),
        ("pt_BR", "Portuguese"), ("es-419", "Spanish"), ("de-CH-1996", "German"),
        ("fr-CA", "French"), ("ja-JP", "Japanese"), ("ko-KR", "Korean"), ("ru-RU", "Russian"),
        ("it-IT", "Italian"), ("eng-US", "English"), (" EN-us ", "English"),
    ],
)  # fmt: skip
def test_iso_639_codes_and_bcp_47_tags(given, expected):
    assert resolve_language(given) == expected
