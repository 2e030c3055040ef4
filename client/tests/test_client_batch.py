"""Batch inputs: JSONL manifests and folders of audio with same-stem transcripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qwen3_aligner_client import (
    ManifestError,
    UnsafePathError,
    items_from_folder,
    items_from_manifest,
    load_items,
)


def write_manifest(path: Path, *entries: object) -> Path:
    lines = [e if isinstance(e, str) else json.dumps(e, ensure_ascii=False) for e in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_manifest_items_resolve_paths_against_the_manifest_folder(tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b.txt").write_bytes("\ufeffSecond transcript.\r\n\r\n".encode())
    manifest = write_manifest(
        tmp_path / "list.jsonl",
        {"audio": "clips/a.wav", "text": "First, inline.", "language": "fr"},
        "",
        {"audio": "clips/../b.flac", "text_file": "texts/b.txt", "id": "b-take2"},
    )
    a, b = items_from_manifest(manifest, language="en")
    assert (a.key, a.audio, a.language, a.transcript()) == (
        "a",
        tmp_path / "clips" / "a.wav",
        "fr",
        "First, inline.",
    )
    assert (b.key, b.audio, b.language) == ("b-take2", tmp_path / "clips/../b.flac", "en")
    # The byte-order mark and the final line breaks are dropped; nothing else is.
    assert b.transcript() == "Second transcript."
    assert a.origin.endswith("list.jsonl:1") and b.origin.endswith("list.jsonl:3")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{not json", "line 1|:1: not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"text": "x", "language": "en"}, "'audio' is required"),
        ({"audio": "a.wav", "text": "x", "text_file": "t", "language": "en"}, "at most one"),
        ({"audio": "a.wav", "text": "x", "language": "en", "context": "c"}, "'context' guides"),
        ({"audio": "a.wav", "text_file": "t", "language": "en", "context": "c"}, "for items"),
        ({"audio": "a.wav", "context": ""}, "'context' must be a non-empty string"),
        ({"audio": "a.wav", "text": "x"}, "no 'language'"),
        ({"audio": "a.wav", "text": "x", "language": "en", "speaker": 1}, "unknown key"),
        ({"audio": "a.wav", "text": 5, "language": "en"}, "'text' must be a string"),
        ({"audio": "", "text": "x", "language": "en"}, "'audio' must be a non-empty string"),
        ({"audio": "a.wav", "text": "x", "language": "en", "id": "../x"}, "cannot name a file"),
        ({"audio": "a.wav", "text": "x", "language": "en", "id": "a\u0000b"}, "cannot name a file"),
        ({"audio": "a.wav", "text": "x", "language": "en", "id": "a\nb"}, "cannot name a file"),
        ({"audio": "/etc/passwd", "text": "x", "language": "en"}, "'audio' is absolute"),
        ({"audio": "a.wav", "text_file": "/root/.ssh/id_rsa", "language": "en"}, "absolute"),
        ({"audio": "../a.wav", "text": "x", "language": "en"}, "leads out of the manifest"),
        ({"audio": "a/../../a.wav", "text": "x", "language": "en"}, "leads out of"),
        ({"audio": "a\u0000.wav", "text": "x", "language": "en"}, "NUL character"),
    ],
)
def test_malformed_manifests_are_rejected_with_the_line(tmp_path, entry, message):
    manifest = write_manifest(tmp_path / "m.jsonl", entry)
    with pytest.raises(ManifestError, match=message):
        items_from_manifest(manifest, language=None)


def test_a_link_out_of_the_manifest_folder_is_refused(tmp_path):
    (tmp_path / "list").mkdir()
    (tmp_path / "secret.txt").write_text("not for the server")
    (tmp_path / "list" / "t.txt").symlink_to(tmp_path / "secret.txt")
    manifest = write_manifest(
        tmp_path / "list" / "m.jsonl", {"audio": "a.wav", "text_file": "t.txt", "language": "en"}
    )
    with pytest.raises(ManifestError, match=r"'text_file' .*leads out of the manifest's folder"):
        items_from_manifest(manifest, language=None)


def test_manifest_ids_must_be_unique(tmp_path):
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        {"audio": "x/a.wav", "text": "one", "language": "en"},
        {"audio": "y/a.mp3", "text": "two", "language": "en"},
    )
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: output name 'a' is already used"):
        items_from_manifest(manifest, language=None)


def test_empty_or_missing_manifests_are_rejected(tmp_path):
    with pytest.raises(ManifestError, match="lists no items"):
        items_from_manifest(write_manifest(tmp_path / "m.jsonl", ""), language="en")
    with pytest.raises(ManifestError, match="does not exist"):
        load_items(tmp_path / "nope.jsonl", language="en")


def test_folder_items_pair_audio_with_same_stem_transcripts(tmp_path):
    for name in ("b.MP3", "a.wav", "c.flac", "notes.txt", "d.ogg", "cover.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    (tmp_path / "b.txt").write_text("beta", encoding="utf-8")
    items = load_items(tmp_path, language="de")
    assert [i.key for i in items] == ["a", "b", "c", "d"]
    assert {i.language for i in items} == {"de"}
    assert items[0].transcript() == "alpha"
    assert items[1].transcript() == "beta"
    # c.flac and d.ogg have no transcript: the server is to transcribe them.
    assert [i.transcribed for i in items] == [False, False, True, True]
    assert items[2].text_file is None and items[2].transcript() is None


def test_folder_items_refuse_files_that_lead_out_of_the_folder_or_are_not_regular(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the server", encoding="utf-8")
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "e.txt"):
        (folder / name).write_bytes(b"")
    (folder / "e.wav").symlink_to(tmp_path / "outside.wav")
    (folder / "a.txt").symlink_to(secret)
    (folder / "b.txt").symlink_to(Path("..") / "secret.txt")
    (folder / "inside.txt").write_text("\ufeffinside\r\nsecond line\r\n", encoding="utf-8")
    (folder / "c.txt").symlink_to("inside.txt")  # a link that stays inside the folder is fine
    (folder / "d.txt").mkdir()
    items = {item.key: item for item in items_from_folder(folder, "en")}
    for key in ("a", "b"):
        with pytest.raises(UnsafePathError, match=r"\.txt is a link that leads out of .*clips"):
            items[key].transcript()
    # Read exactly as before: BOM and final line breaks dropped, line breaks as text mode reads.
    assert items["c"].transcript() == "inside\nsecond line"
    with pytest.raises(UnsafePathError, match=r"d\.txt is not a regular file"):
        items["d"].transcript()
    with pytest.raises(UnsafePathError, match=r"e\.wav is a link that leads out of"):
        items["e"].check_audio()
    items["a"].check_audio()  # its audio is a plain file in the folder


def test_folder_needs_a_language_for_transcripts_audio_and_distinct_stems(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "b.wav").write_bytes(b"")
    # No transcripts: every item is transcribed, in the language the server detects.
    items = items_from_folder(tmp_path, language=None)
    assert [(i.key, i.language, i.transcribed) for i in items] == [
        ("a", None, True),
        ("b", None, True),
    ]
    (tmp_path / "a.txt").write_text("alpha", encoding="utf-8")
    with pytest.raises(ManifestError, match="--language is required for a folder with transcr"):
        items_from_folder(tmp_path, language=None)
    a, b = items_from_folder(tmp_path, language="en")
    assert (a.transcribed, b.transcribed, b.language) == (False, True, "en")
    (tmp_path / "a.mp3").write_bytes(b"")
    with pytest.raises(ManifestError, match="would write the same output"):
        items_from_folder(tmp_path, language="en")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ManifestError, match="holds no audio files"):
        items_from_folder(empty, language="en")


def test_manifest_root_admits_absolute_paths_inside_it_and_nothing_outside(tmp_path):
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    (data / "clips" / "a.wav").write_bytes(b"")
    (data / "clips" / "a.txt").write_text("hello", "utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("key", "utf-8")
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "m.jsonl"
    good = {"audio": str(data / "clips" / "a.wav"), "text_file": str(data / "clips" / "a.txt")}
    manifest.write_text(json.dumps(good) + "\n", "utf-8")
    with pytest.raises(ManifestError, match="is absolute"):
        items_from_manifest(manifest, "en")
    (item,) = items_from_manifest(manifest, "en", root=data)
    assert item.audio == data / "clips" / "a.wav"
    bad = {"audio": str(data / "clips" / "a.wav"), "text_file": str(secret)}
    manifest.write_text(json.dumps(bad) + "\n", "utf-8")
    with pytest.raises(ManifestError, match="leads out of --manifest-root"):
        items_from_manifest(manifest, "en", root=data)
