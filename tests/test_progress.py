"""The one progress helper: silent off a terminal unless asked for plain lines, counts either way."""

from seesaw.progress import Progress


def test_off_a_terminal_it_prints_plain_lines_only_when_asked(capsys):
    with Progress("profiling", 10, every_s=0.0, unit=" samples") as bar:
        bar(3)
        bar(7, 12)
    with Progress("quiet", 5) as bar:
        bar(2)
        bar.advance()
        assert bar.done == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("profiling: 3/10 samples, ") and err[1].startswith("profiling: 7/12 samples, ")
    assert len(err) == 2


def test_a_disabled_bar_never_prints(capsys):
    with Progress("run", 4, every_s=0.0, enabled=False) as bar:
        bar.advance(4)
    assert capsys.readouterr().err == "" and bar.done == 4
