import io

from challenge.progress import Progress


def test_progress_draws_when_enabled_and_finishes_the_line():
    stream = io.StringIO()
    with Progress("encode", 200, enabled=True, stream=stream) as bar:
        bar.advance(50)
        bar.advance(150)
    text = stream.getvalue()
    assert "encode" in text and "200/200" in text and "100%" in text and text.endswith("\n")


def test_progress_is_silent_off_a_terminal():
    stream = io.StringIO()  # isatty() is False, as in logs and CI
    with Progress("encode", 10, stream=stream) as bar:
        bar.advance(10)
    assert stream.getvalue() == ""
