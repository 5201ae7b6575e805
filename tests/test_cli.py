"""The tf-vib command: the demo end to end (quick), and argument errors."""

import json

import pytest

from tf_vib.cli import build_parser, main


def test_quick_demo_writes_every_output(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--dataset", "digits_rows", "--units", "16", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    names = {p.name for p in out.iterdir()}
    for mode in ("float32", "dynamic", "int8"):
        assert {f"baseline_{mode}.tflite", f"compressed_{mode}.tflite"} <= names
    assert {"compressed.keras", "test_inputs.npz", "report.json", "table.txt",
            "accuracy_vs_size.png", "tflite_files.png"} <= names
    report = json.loads((out / "report.json").read_text())
    files = {(f["model"], f["mode"]): f for f in report["files"]}
    assert files[("compressed", "int8")]["file_bytes"] == (out / "compressed_int8.tflite").stat().st_size
    assert all(f["verified"] for f in files.values())
    table = (out / "table.txt").read_text()
    assert table in printed and "int8 vs float32" in table
    assert "step 4/4" in printed


@pytest.mark.parametrize("argv, message", [
    (["demo", "--units", "0"], "--units must be >= 1; received 0"),
    (["demo", "--epochs", "-1"], "--epochs must be >= 0; received -1"),
])
def test_demo_rejects_bad_arguments(argv, message):
    with pytest.raises(SystemExit, match=message):
        main(argv)


def test_commands_are_listed():
    help_text = build_parser().format_help()
    assert "demo" in help_text and "convert" in help_text


@pytest.mark.slow
@pytest.mark.parametrize("failing, code", [("baseline", 0), ("compressed", 1)])
def test_demo_exit_status_follows_the_compressed_files(tmp_path, capsys, monkeypatch, failing, code):
    import dataclasses

    from tf_vib.cli import deploy

    real = deploy.convert_and_measure

    def one_file_fails(*args, **kwargs):
        figures, files = real(*args, **kwargs)
        figures = [dataclasses.replace(f, verified=False, verification="injected miss")
                   if (f.model, f.mode) == (failing, "dynamic") else f for f in figures]
        return figures, files

    monkeypatch.setattr(deploy, "convert_and_measure", one_file_fails)
    argv = ["demo", "--quick", "--dataset", "digits_rows", "--units", "8", "--output", str(tmp_path)]
    assert main(argv) == code
    assert f"{failing} dynamic file misses its verification target: injected miss" in capsys.readouterr().out
