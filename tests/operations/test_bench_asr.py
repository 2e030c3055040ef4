"""``bench.asr``: on tiny checkpoints a short run puts upstream's transcribe and the served
front side by side, with equal results, generation within the bound, and its table."""

from __future__ import annotations

import json

from qwen3_aligner_tools.bench import asr as bench_asr
from qwen3_aligner_tools.bench.asr import Row, differences, table


def test_differences_name_the_clip_and_the_first_unit_that_differs():
    same = ("one two", "English", [("one", 0.1, 0.2), ("two", 0.3, 0.4)])
    moved = ("one two", "English", [("one", 0.1, 0.2), ("two", 0.3, 0.5)])
    other = ("one", "English", [("one", 0.1, 0.2)])
    assert differences([same, same], [same, same]) == []
    assert differences([same, same], [same, moved]) == ["clip 1: units differ from unit 1 (2 vs 2)"]
    assert differences([same], [other])[0].startswith("clip 0: transcript/language")


def test_the_table_gives_each_modes_ratio_to_upstream():
    rows = [
        Row("upstream", 2.0, 0.5, 1.0, 316.0, 300.0, [4.0]),
        Row("served", 1.0, 1.0, 2.0, 316.0, 300.0, [2.0]),
    ]
    lines = table(rows).splitlines()
    assert "| 1.00x " in lines[2] and "| 2.00x " in lines[3] and "| 316.0 " in lines[3]


def test_a_short_run_on_tiny_checkpoints_gives_equal_results(
    tmp_path, capsys, random_checkpoint, asr_checkpoint
):
    out = tmp_path / "asr.json"
    argv = [
        *("--checkpoint", str(random_checkpoint), "--asr-checkpoint", str(asr_checkpoint)),
        *("--clips", "2", "--seconds", "4", "--rounds", "1", "--json", str(out)),
    ]
    assert bench_asr.main(argv) == 0
    printed = capsys.readouterr().out
    assert "results: equal (transcript, language, every timestamp)" in printed
    report = json.loads(out.read_text())
    assert report["equal"] and report["new_token_bound"] == 16 + 40
    rows = {r["mode"]: r for r in report["rows"]}
    assert set(rows) == {"upstream", "served"}
    # The tiny model says one word per second of audio (4 s: 53 audio tokens, 5 words), then
    # the lead and the end token: both modes generate alike.
    assert rows["upstream"]["new_tokens_per_clip"] == rows["served"]["new_tokens_per_clip"] == 9
    assert rows["served"]["words_per_clip"] == 5 and rows["upstream"]["ratio"] == 1.0
