"""ml.inference and the server's header handling, in-process (the HTTP tests run them for real)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xgboost as xgb

from ml.inference import (
    CSV,
    JSON,
    JSONLINES,
    ModelError,
    PayloadError,
    Predictor,
    RowError,
    format_predictions,
    load_model,
    parse_csv_rows,
    parse_json_rows,
    parse_jsonlines_rows,
)
from ml.sagemaker.server import choose_accept, media_type
from ml.training import save_model


def test_csv_fast_path_equals_row_by_row_reading() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1000, 5)) * 1000
    body = "".join(",".join(repr(float(v)) for v in row) + "\n" for row in values).encode()
    parsed = parse_csv_rows(body, 5)
    assert parsed.dtype == np.float32 and parsed.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(parsed, values.astype(np.float32))


@pytest.mark.parametrize(
    ("body", "row", "text"),
    [
        (b"1,2,3\n4,5\n", 2, "found 2 comma-separated values"),
        (b"1,2,3\n4,5,6,7\n", 2, "found 4"),
        (b"\n1,2,3\n", 1, "the line is empty"),
        (b"1,2,3\n4,5,6\n7,8,NA\n", 3, "column 3 is 'NA', not a number"),
        (b"a,b,c\n1,2,3\n", 1, "column 1 is 'a'"),
    ],
)
def test_csv_errors_name_the_row(body: bytes, row: int, text: str) -> None:
    with pytest.raises(RowError) as caught:
        parse_csv_rows(body, 3)
    assert caught.value.row == row
    assert text in str(caught.value)
    assert "the model expects 3 numeric features per row" in str(caught.value)


def test_csv_missing_values_and_line_endings() -> None:
    parsed = parse_csv_rows(b"1,,3\r\n,5,6\r\n\r\n", 3)
    assert np.isnan(parsed[0, 1]) and np.isnan(parsed[1, 0])
    assert parsed.shape == (2, 3)
    assert parse_csv_rows(b"\n \n", 3).shape == (0, 3)


def test_csv_fields_may_be_quoted_once() -> None:
    quoted = parse_csv_rows(b'"1","2.5",3\n4,"","-6e-1"\r\n', 3)
    np.testing.assert_array_equal(quoted[0], [1.0, 2.5, 3.0])
    assert np.isnan(quoted[1, 1]) and quoted[1, 2] == np.float32(-0.6)
    # Only a pair around a whole field: anything else is named as the bad value.
    with pytest.raises(RowError, match="row 2: column 1 is '1\"2'"):
        parse_csv_rows(b'1,2,3\n1"2,3,4\n', 3)
    with pytest.raises(RowError, match='row 1: column 1 is \'""1""\''):
        parse_csv_rows(b'""1"",2,3\n', 3)
    with pytest.raises(RowError, match="row 1: column 2 is 'a'"):
        parse_csv_rows(b'1,"a",3\n', 3)
    # A JSON string is still not a number on the jsonlines path, which reuses the CSV parser.
    with pytest.raises(RowError, match='row 1: value 1 is "1", not a number'):
        parse_jsonlines_rows(b'["1", 2, 3]\n', 3)


def test_json_shapes() -> None:
    rows = [[1, 2], [3, None]]
    for document in ({"instances": rows}, rows, {"instances": [{"features": r} for r in rows]}):
        parsed = parse_json_rows(json.dumps(document).encode(), 2)
        assert parsed.shape == (2, 2) and np.isnan(parsed[1, 1])
    assert parse_json_rows(b"[1, 2]", 2).shape == (1, 2)
    assert parse_json_rows(b'{"features": [1, 2]}', 2).shape == (1, 2)
    with pytest.raises(PayloadError):
        parse_json_rows(b'{"rows": []}', 2)
    with pytest.raises(RowError, match="row 2: value 1 is true"):
        parse_json_rows(b"[[1, 2], [true, 2]]", 2)


def test_jsonlines_fast_path_and_objects() -> None:
    assert parse_jsonlines_rows(b"[1, 2]\n[3, null]\n", 2).shape == (2, 2)
    mixed = parse_jsonlines_rows(b'[1, 2]\n{"features": [3, 4]}\n', 2)
    np.testing.assert_array_equal(mixed, [[1, 2], [3, 4]])
    with pytest.raises(RowError, match="row 2: found 1 values"):
        parse_jsonlines_rows(b"[1, 2]\n[3]\n", 2)


def test_integers_beyond_float_range_read_as_infinity_in_every_format() -> None:
    huge = "9" * 400
    expected = [[1.0, np.inf], [-np.inf, 2.0]]
    body = f"[[1, {huge}], [-{huge}, 2]]".encode()
    np.testing.assert_array_equal(parse_json_rows(body, 2), expected)
    np.testing.assert_array_equal(parse_jsonlines_rows(f"[1, {huge}]\n[-{huge}, 2]\n".encode(), 2), expected)
    np.testing.assert_array_equal(parse_csv_rows(f"1,{huge}\n-{huge},2\n".encode(), 2), expected)
    # The line-by-line path (a JSON object line) reads them the same way.
    objects = f'{{"features": [1, {huge}]}}\n{{"features": [-{huge}, 2]}}\n'.encode()
    np.testing.assert_array_equal(parse_jsonlines_rows(objects, 2), expected)


def test_formats_have_one_row_per_probability() -> None:
    probabilities = np.array([0.0, 0.25, 0.5, 0.9999996, 1.0])
    assert format_predictions(probabilities, 0.5, CSV) == (
        b"0.000000,0\n0.250000,0\n0.500000,1\n1.000000,1\n1.000000,1\n"
    )
    lines = format_predictions(probabilities, 0.3, JSONLINES).splitlines()
    assert [json.loads(line)["predicted_label"] for line in lines] == [0, 0, 1, 1, 1]
    document = json.loads(format_predictions(probabilities, 0.5, JSON))
    assert [row["probability"] for row in document["predictions"]] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert format_predictions(np.array([]), 0.5, CSV) == b""


def test_predictor_refuses_non_probability_models(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, label=x[:, 0]), 2)
    save_model(booster, tmp_path)
    with pytest.raises(ModelError, match="objective is 'reg:squarederror'"):
        load_model(tmp_path)
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "xgboost-model").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="pickled models are not loaded"):
        load_model(tmp_path)


def test_logitraw_margins_become_probabilities() -> None:
    x = np.random.default_rng(0).normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    raw = xgb.train({"objective": "binary:logitraw"}, xgb.DMatrix(x, label=y), 5)
    margins = raw.inplace_predict(x)
    probabilities = Predictor(raw).predict(x.astype(np.float32))
    assert ((probabilities > 0) & (probabilities < 1)).all()
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-margins)), rtol=1e-5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, CSV),
        ("", CSV),
        ("*/*", CSV),
        ("application/json", JSON),
        ("application/jsonlines;q=0.5, application/json;q=0.9", JSON),
        ("text/html, application/*;q=0.2", JSON),
        ("application/json;q=0", None),
        ("image/png", None),
    ],
)
def test_accept_negotiation(header: str | None, expected: str | None) -> None:
    assert choose_accept(header) == expected


def test_media_type_strips_parameters() -> None:
    assert media_type("Text/CSV; charset=utf-8") == "text/csv"
    assert media_type(None) == ""
