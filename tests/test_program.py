"""`shiftnpu program`: picks the board's programmer, says what is missing when none is installed."""

import json
import os
import stat

import pytest

from hw.program import MissingProgrammer, programmer_command
from sw_driver.cli import main


def _fake_tool(dirpath, name):
    p = dirpath / name
    p.write_text(f'#!/bin/sh\necho "$0 $@" > "{dirpath / "called"}"\n')
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_missing_programmer_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingProgrammer, match="iceprog.*openFPGALoader"):
        programmer_command("icebreaker", "x.bin")
    with pytest.raises(MissingProgrammer, match="dfu-util"):
        programmer_command("orangecrab-85f", "x.bit")


def test_commands_per_board(monkeypatch, tmp_path):
    for tool in ("iceprog", "openFPGALoader", "dfu-util"):
        _fake_tool(tmp_path, tool)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert programmer_command("icebreaker", "a.bin")[1:] == ["-S", "a.bin"]
    assert programmer_command("icebreaker", "a.bin", flash=True)[1:] == ["a.bin"]
    assert programmer_command("ulx3s-85f", "a.bit")[1:] == ["-b", "ulx3s", "a.bit"]
    assert programmer_command("orangecrab-85f", "a.bit")[1:] == ["-a", "0", "-D", "a.bit"]
    os.remove(tmp_path / "iceprog")  # falls back to openFPGALoader
    assert os.path.basename(programmer_command("icebreaker", "a.bin")[0]) == "openFPGALoader"


def test_program_cli_runs_the_tool(monkeypatch, tmp_path, capsys):
    _fake_tool(tmp_path, "openFPGALoader")
    monkeypatch.setenv("PATH", str(tmp_path))
    bit = tmp_path / "top.bit"
    bit.write_bytes(b"\0")
    (tmp_path / "report.json").write_text(json.dumps({"bitstream": str(bit)}))
    assert main(["program", "--board", "ulx3s-85f", "--build-dir", str(tmp_path)]) == 0
    assert "-b ulx3s" in (tmp_path / "called").read_text()
    assert main(["program", "--board", "ulx3s-85f", "--build-dir", str(tmp_path / "none")]) == 1
    assert "shiftnpu build --board ulx3s-85f" in capsys.readouterr().err
