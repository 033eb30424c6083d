"""miri-tables (scripts/tables.py): every method on the same masked table, one row each."""

import csv

import numpy as np
import pytest

from miri_lightning import table_benchmark


def test_the_benchmark_scores_every_method_on_the_same_masks(tmp_path, capsys):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 1))
    table = np.hstack([z + 0.1 * rng.normal(size=(60, 1)) for _ in range(4)])  # four correlated columns
    path = table_benchmark.write_csv(table, tmp_path / "corr.csv")
    out = tmp_path / "rows.csv"
    args = ["--csv", str(path), "--rates", "0.3", "--seeds", "0", "--draws", "3", "--out", str(out)]
    table_benchmark.main([*args, "--", "miri.steps_per_round=10"])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == list(table_benchmark.METHODS)
    by = {r["method"]: {k: float(v) for k, v in r.items() if k not in ("table", "method")} for r in rows}
    assert all(r["table"] == "corr" and r["rate"] == "0.3" for r in rows)
    assert by["mean"]["crps"] == pytest.approx(by["mean"]["mae"], rel=1e-5)  # one imputation: CRPS = MAE
    assert by["mean"]["rmse"] == pytest.approx(1.0, abs=0.25)  # standardised columns: the mean errs by ~1 std
    assert by["iterative"]["rmse"] < 0.6 * by["mean"]["rmse"]  # chained equations use the correlation
    assert by["iterative"]["crps"] < by["iterative"]["mae"]  # K = 3 different draws
    assert "MMD / RMSE / CRPS" in capsys.readouterr().out


def test_bad_arguments_are_refused_with_the_option_named(tmp_path, capsys):
    for args, message in [
        (["--rates", "1.5"], "--rates"),
        (["--draws", "0"], "--draws"),
        (["--csv", str(tmp_path / "nope.csv")], "no such file"),
        (["--methods", "mean"], "must include miri"),
    ]:
        with pytest.raises(SystemExit):
            table_benchmark.main(args)
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="scikit-learn tables are"):
        table_benchmark.sklearn_table("iris")
