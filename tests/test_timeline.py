"""The failover picture: a PNG with every request and the phases (matplotlib, drill-only)."""

from drill.timeline import Timeline


def test_the_timeline_draws_every_request_and_phase(tmp_path):
    timeline = Timeline()
    timeline.phase("all up")
    timeline.record(0.1, 0.02, "vllm", 200)
    timeline.phase("Gaming Mode")
    timeline.record(1.0, 0.05, "ollama", 200)
    timeline.record(1.5, 4.0, None, 503)
    path = timeline.draw(tmp_path / "picture.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [title for title, _, _ in timeline.phases] == ["all up", "Gaming Mode"]
    assert [p.tier for p in timeline.points] == ["vllm", "ollama", None]


def test_the_deployed_program_never_needs_matplotlib():
    requirements = (__import__("pathlib").Path(__file__).parent.parent / "requirements.txt").read_text()
    assert "matplotlib" not in requirements
