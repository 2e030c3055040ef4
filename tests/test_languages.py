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


@pytest.mark.parametrize("bad", ["", "klingon", "Arabic", "english-us"])
def test_unsupported_is_rejected_with_the_list(bad):
    with pytest.raises(ValueError, match="Spanish \\(es\\)"):
        resolve_language(bad)


def test_the_refusal_names_the_value_and_lists_every_language_with_its_code():
    with pytest.raises(ValueError) as refused:
        resolve_language(" Klingon ")
    assert str(refused.value) == (
        "unsupported language ' Klingon '; use one of: Chinese (zh), English (en), "
        "Cantonese (yue), French (fr), German (de), Italian (it), Japanese (ja), Korean (ko), "
        "Portuguese (pt), Russian (ru), Spanish (es)"
    )
