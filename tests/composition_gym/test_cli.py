"""The core ``compgym`` commands (list, show, play), one-line errors and the lazy parser."""

import io
import subprocess
import sys

import pytest

from composition_gym import cli, list_envs


def _one_line_error(capsys, rc: int) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return err


def test_list_prints_every_id_with_its_profile(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[:3] == ["id", "profile", "split"]
    for row in list_envs():
        line = next(li for li in out.splitlines() if li.startswith(row["id"] + " "))
        assert line.split()[1] == row["profile"]


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


@pytest.mark.parametrize("argv,needle", [
    (["show", "Nope-v0"], "unknown env id 'Nope-v0'"),
    (["show", "Compose-L3-v0", "--episodes", "0"], "ShowConfig.episodes must be >= 1, got 0"),
    (["play", "Compose-L3-v0", "--episodes", "x"], "Error parsing --episodes: invalid literal for int()"),
    (["show", "Compose-L3-v0", "--epsodes", "2"], "Unrecognized options: --epsodes, 2 Perhaps you meant: "
                                                  "--episodes INT"),
    (["list", "--profile", "big"], "invalid choice 'big' for argument '--profile'"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
])
def test_user_errors_are_one_line_with_status_2(capsys, argv, needle):
    err = _one_line_error(capsys, cli.main(argv))
    assert err.startswith("compgym") and needle in err


def test_debug_flag_and_variable_show_the_traceback(monkeypatch):
    with pytest.raises(ValueError, match="unknown env id"):
        cli.main(["show", "Nope-v0", "--debug"])
    monkeypatch.setenv("COMPGYM_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown env id"):
        cli.main(["show", "Nope-v0"])


def test_an_internal_error_is_one_line_that_points_to_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("kaput")

    from composition_gym import commands

    monkeypatch.setattr(commands, "run_list", boom)
    err = _one_line_error(capsys, cli.main(["list"]))
    assert "RuntimeError: kaput" in err and "--debug" in err


@pytest.mark.parametrize("typed,verdict", [
    ("cf;cdff;dfffdc\n", "reward 1 (correct)"),
    ("cf;cdff;dfffdd\n", "reward 0 (wrong)"),
    ("Zzz\n", "cannot read that"),
])
def test_play_reads_a_typed_trace(monkeypatch, capsys, typed, verdict):
    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    assert cli.main(["play", "Compose-L3-v0", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Quit: Ctrl-D or Ctrl-C" in out.splitlines()[0]  # the way out is shown up front
    assert verdict in out


def test_play_names_the_rejected_token_and_diagnoses_the_prefix(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("cf;cdfa;\n"))
    assert cli.main(["play", "Compose-L3-v0", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "rejected: token '<eos>' at position 9 of your trace (after 'cf;cdfa;')" in out
    assert "the grammar allows here: a b c d e f" in out
    assert "ok  step 1 Left·Flip: expected cf, got cf" in out
    assert "XX  step 2 CatX·Sort: expected cdff, got cdfa" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("cf;cd\n"))
    cli.main(["play", "Compose-L3-v0", "--seed", "3"])
    out = capsys.readouterr().out
    assert "your prefix 'cf;cd' is correct so far" in out
    assert "ok  step 2 CatX·Sort: expected cdff, got cd (unfinished)" in out


def test_play_exits_quietly_on_ctrl_c(monkeypatch, capsys):
    class Interrupted:
        def readline(self):
            raise KeyboardInterrupt

    monkeypatch.setattr("sys.stdin", Interrupted())
    assert cli.main(["play", "Compose-L3-v0"]) == 130
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err and captured.err == ""


def test_core_commands_do_not_import_torch_or_sb3():
    code = ("import sys; from composition_gym import cli; "
            "assert cli.main(['list']) == 0; assert cli.main(['show', 'Compose-L3-v0']) == 0; "
            "cli.build_parser(); "
            "heavy = sorted(m for m in ('torch', 'stable_baselines3', 'sb3_contrib', 'composition_gym.agents') "
            "if m in sys.modules); print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("list", "show", "play", "train", "eval", "demo", "bench", "reproduce"):
        assert name in out


