"""Pure rendering helpers of the CLI: pull progress on a tty and a pipe, sizes, times, PROCESSOR."""

from __future__ import annotations

import io

from app.cli.render import Progress, human_since, human_size, human_until, processor, table, to_epoch

EVENTS = [
    {"status": "pulling manifest"},
    {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 1000, "completed": 0},
    {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 1000, "completed": 500},
    {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:" + "a" * 64, "total": 1000, "completed": 1000},
    {"status": "pulling bbbbbbbbbbbb", "digest": "sha256:" + "b" * 64, "total": 2000, "completed": 700},
    {"status": "verifying sha256 digest"},
    {"status": "success"},
]


def test_progress_on_a_pipe_prints_one_line_per_file_and_status() -> None:
    out = io.StringIO()
    p = Progress(out, tty=False)
    for e in EVENTS:
        p.update(e)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith("pulling aaaaaaaaaaaa: 100%") and lines[1].endswith("1.0 KB/1.0 KB")
    assert lines[2].startswith("pulling bbbbbbbbbbbb:  35%")  # unfinished file: its last state, once
    assert lines[3:] == ["verifying sha256 digest", "success"]
    assert "\r" not in out.getvalue()


def test_progress_on_a_tty_redraws_each_file_line() -> None:
    out = io.StringIO()
    p = Progress(out, tty=True)
    for e in EVENTS:
        p.update(e)
    p.close()
    text = out.getvalue()
    assert text.count("\r") == 4  # one redraw per file event
    assert text.splitlines()[0] == "pulling manifest"
    assert text.count("\n") == 5  # manifest, file a, file b, verifying, success


def test_units_and_times() -> None:
    assert [human_size(n) for n in (None, 512, 98_000_000, 4_700_000_000)] == ["?", "512 B", "98 MB", "4.7 GB"]
    now = 1_000_000.0
    assert human_since(now - 120, now) == "2 minutes ago"
    assert human_until(now + 3600, now) == "1 hour from now"
    assert human_until(now + 10**10, now) == "Forever"
    assert to_epoch("1970-01-01T00:00:10.123456789Z") == 10.123456
    assert to_epoch("2024-05-10T08:06:48.639712648-07:00") == to_epoch("2024-05-10T15:06:48.639712Z")
    assert [processor(100, 0), processor(100, 100), processor(100, 25)] == ["100% CPU", "100% GPU", "75%/25% CPU/GPU"]
    assert table(["A", "BB"], [["xyz", "1"]]) == "A     BB\nxyz   1"
