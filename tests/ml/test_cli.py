"""`python -m ml`: argument errors print one readable line and exit 2; `download` explains a
network failure; the help texts list what --set accepts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ml.data
from ml.cli import build_parser, main

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "split_ratio=1.5"], "'split_ratio' must be in (0, 1)"),
        (["--set", "split_ratio=abc"], "'split_ratio' must be a number"),
        (["--set", "hyperparameters.max_depth=abc"], "max_depth"),
        (["--set", "hyperparameters.no_such_param=1"], "no_such_param"),
        (["--set", "treshold=0.6"], "did you mean 'threshold'"),
        (["--set", "split_ratio"], "expected NAME=VALUE"),
        (["--set", "standard_scaled=PAY_AMT1"], "'standard_scaled' must be a list of column names"),
    ],
)
def test_bad_set_values_exit_2_with_one_line(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run-local", "--output", str(tmp_path / "out"), *args])
    assert code == 2
    assert expected in _error_line(capsys)
    # Validation happens before anything runs: no job tree, no store.
    assert not (tmp_path / "out" / "work").exists()


def test_missing_data_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run-local", "--output", str(tmp_path), "--data", str(tmp_path / "nope.csv")])
    assert code == 2
    assert "nope.csv: no such file" in _error_line(capsys)


def test_unsupported_data_file_type_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.parquet"
    data.write_text("x")
    assert main(["run-local", "--output", str(tmp_path), "--data", str(data)]) == 2
    assert "unsupported file type" in _error_line(capsys)


def test_data_and_data_uri_together_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text("Label,x\n1,2\n")
    code = main(
        ["run-local", "--output", str(tmp_path), "--data", str(data), "--set", "data_uri=s3://local-data/x/"]
    )
    assert code == 2
    assert "use one of them" in _error_line(capsys)


def test_invalid_execution_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run-local", "--output", str(tmp_path), "--execution-name", "my run!"]) == 2
    assert "execution name 'my run!' is not valid" in _error_line(capsys)


def test_bad_set_through_python_dash_m_has_no_traceback(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ml", "run-local", "--output", str(tmp_path), "--set", "threshold=2"],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "error: invalid pipeline input: 'threshold' must be in [0, 1], got 2"
    ]


def test_download_without_network_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = ml.data.download_uci
    unreachable = (f"file://{tmp_path}/missing.xls",)

    def offline(dest: Any, **_: Any) -> Path:
        return real(dest, urls=unreachable)

    monkeypatch.setattr(ml.data, "download_uci", offline)
    code = main(["download", "--dest", str(tmp_path / "data")])
    assert code == 1
    line = _error_line(capsys)
    assert "could not download" in line
    assert "--data FILE" in line
    assert "synthetic" in line


def test_download_saves_the_file_and_prints_the_next_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "remote.xls"
    source.write_bytes(ml.data.OLE2_MAGIC + b"rest of a workbook")
    real = ml.data.download_uci

    def local(dest: Any, **_: Any) -> Path:
        return real(dest, urls=(source.as_uri(),))

    monkeypatch.setattr(ml.data, "download_uci", local)
    assert main(["download", "--dest", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    saved = tmp_path / "data" / ml.data.UCI_FILENAME
    assert saved.read_bytes().startswith(ml.data.OLE2_MAGIC)
    assert f"python -m ml run-local --data '{saved}'" in out


def test_help_lists_commands_and_set_names(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    top = parser.format_help()
    for command in ("run-local", "download", "upload-data", "start", "status"):
        assert command in top
    with pytest.raises(SystemExit) as exit_info:
        main(["run-local", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in (
        "split_ratio",
        "threshold",
        "label_column",
        "hyperparameters.NAME",
        "--no-explore",
        "SYNTHETIC",
    ):
        assert name in text


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
