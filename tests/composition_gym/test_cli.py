"""The core ``compgym`` commands: list, show, play."""

import io

import pytest

from composition_gym import cli, list_envs


def test_list_prints_every_id(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for row in list_envs():
        assert row["id"] in out


def test_list_filters_profile(capsys):
    cli.main(["list", "--profile", "paper"])
    out = capsys.readouterr().out
    assert "Paper-Compose-L3-v0" in out and "composition_gym/Compose-L3-v0" not in out


def test_show_prints_prompt_cascade_and_trace(capsys):
    assert cli.main(["show", "Compose-L3-v0", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "prompt : <bos>X=df:X+Rev(Sort(Left(Flip,X)+X))|" in out
    assert "1:Left·Flip  2:CatX·Sort  3:PrefixX·Rev" in out
    assert "trace  : cf;cdff;dfffdc<eos>" in out


def test_show_unknown_id_is_a_clear_error(capsys):
    assert cli.main(["show", "Nope-v0"]) == 2
    assert "Nope" in capsys.readouterr().err


@pytest.mark.parametrize("typed,verdict", [
    ("cf;cdff;dfffdc\n", "reward 1 (correct)"),
    ("cf;cdff;dfffdd\n", "reward 0 (wrong)"),
    ("cf\n", "(malformed)"),
    ("Zzz\n", "cannot read that"),
])
def test_play_reads_a_typed_trace(monkeypatch, capsys, typed, verdict):
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert cli.main(["play", "Compose-L3-v0", "--seed", "3"]) == 0
    assert verdict in capsys.readouterr().out
