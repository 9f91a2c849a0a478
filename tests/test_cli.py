import subprocess
import sys

from sw_driver.cli import main


def test_info_prints_config(capsys):
    assert main(["info", "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert "rows              4" in out and "acc_width" in out and "amaranth" in out


def test_bad_config_is_a_clear_error(capsys):
    assert main(["info", "--bits", "5"]) == 1
    assert "weight_bits must be" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    assert "info" in capsys.readouterr().out


def test_driver_side_stays_light():
    # A host that only runs inference must not need Amaranth or torch: the CLI parser and the
    # driver package import neither.
    code = (
        "import sys, sw_driver, sw_driver.cli as c; c.build_parser(); "
        "bad = [m for m in ('amaranth', 'torch', 'cocotb') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_generate_writes_verilog_and_config(tmp_path, capsys):
    import json

    assert main(["generate", "--rows", "4", "--cols", "4", "--bits", "4", "--top", "array", "-o", str(tmp_path)]) == 0
    import re

    v = (tmp_path / "shiftnpu_array.v").read_text()
    assert "module shiftnpu_array" in v
    assert " * " not in re.sub(r"\(\*.*?\*\)", "", v)  # a shift array has no multiplier anywhere
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert (
        cfg["config"]["rows"] == 4 and cfg["config"]["weight_bits"] == 4 and cfg["derived"]["latency"] == 3
    )  # rows + 1 (hw.systolic)
