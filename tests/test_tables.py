"""Vectors through the same MIRI machinery: the MLP velocity field, data=toy, data=csv."""

import csv

import numpy as np
import pytest
import torch
from conftest import QUIET, compose_config

from miri_lightning import flow, metrics
from miri_lightning.data.sources import CsvSource, ToySource
from miri_lightning.nets import VelocityMLP
from miri_lightning.run import train


def vector_config(tmp_path, *overrides):
    return compose_config(list(overrides), tmp_path / "run", base=QUIET)


def test_mlp_velocity_is_zero_on_observed_entries_and_checks_its_width():
    net = VelocityMLP(dim=5, widths=[16, 16])
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    observed = torch.rand(4, 5) > 0.5
    v = net(a, b, observed, torch.rand(4))
    assert v.shape == (4, 5)
    assert (v[observed] == 0).all() and (v[~observed] != 0).all()
    with pytest.raises(ValueError, match="vectors of 5 entries"):
        net(torch.randn(4, 6), torch.randn(4, 6), torch.ones(4, 6, dtype=torch.bool), torch.rand(4))
    with pytest.raises(ValueError, match="model.widths"):
        VelocityMLP(dim=5, widths=[])


def test_miri_keeps_the_two_clusters_of_the_toy_mixture(tmp_path):
    """The paper's check: 2-D mixture, equal weights, 30 % MCAR per entry. MIRI's imputed
    points are distributed like the truth (MMD below the observed-mean fill's) and split
    between the clusters as the truth does."""
    cfg = vector_config(tmp_path, "data=toy", "model=mlp", "mask.rate=0.3", "miri.rounds=4", "miri.steps_per_round=250")
    run = train(cfg)
    store = run.datamodule.store
    truth, observed, imputed = store.truth, store.observed, store.imputed
    assert torch.equal(imputed[observed], truth[observed])
    mean_fill = flow.initial_fill(truth, observed, "mean")
    miri_mmd = metrics.mmd(imputed, truth).item()
    mean_mmd = metrics.mmd(mean_fill, truth).item()
    assert miri_mmd < mean_mmd / 5, (miri_mmd, mean_mmd)
    source = run.datamodule.source
    share, true_share = source.cluster_share(imputed), source.cluster_share(truth)
    assert abs(share - true_share) < 0.03, (share, true_share)
    # points with both coordinates missing land in a cluster, not between them (as the mean fill does)
    both = (~observed).all(1)
    assert both.sum() > 50
    distance = (imputed[both].abs() - 2).abs().mean()  # centres at ±2 on each axis
    assert distance < 0.8, distance
    last = run.miri.history[-1]
    assert last["cluster_share_error"] == pytest.approx(abs(share - true_share), abs=1e-6)
    assert last["mmd"] < run.miri.history[0]["mmd"]  # below the N(0, 1) initial fill's


def test_toy_mixture_in_more_dimensions_keeps_unequal_weights():
    source = ToySource(n=4000, dim=6, weight=0.3, seed=1)
    points = source.load().values
    assert points.shape == (4000, 6)
    assert source.cluster_share(points) == pytest.approx(0.3, abs=0.03)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def people(n=240, seed=0):
    """A table with a header, a text column, blanks and NA: income depends on age."""
    rng = np.random.default_rng(seed)
    rows = [["name", "age", "income", "city", "score"]]
    for i in range(n):
        age = rng.normal(40, 10)
        cells = [f"p{i}", f"{age:.1f}", f"{1000 + 50 * age + rng.normal(0, 50):.2f}", ["Paris", "Lyon"][i % 2]]
        cells.append(f"{rng.random():.3f}")
        for k in (1, 2, 4):
            if rng.random() < 0.2:
                cells[k] = ["", "NA", "nan"][int(rng.integers(3))]
        rows.append(cells)
    return rows


def test_csv_imputes_numeric_columns_in_original_units_and_passes_text_through(tmp_path):
    rows = people()
    write_csv(tmp_path / "people.csv", rows)
    cfg = vector_config(tmp_path, "data=csv", f"data.path={tmp_path / 'people.csv'}", "miri.rounds=3")
    run = train(cfg)
    assert run.module.velocity.dim == 3  # age, income, score; name and city pass through
    with open(run.output_dir / "imputed.csv") as f:
        out = list(csv.reader(f))
    assert out[0] == rows[0]
    assert len(out) == len(rows)
    blanks = 0
    for before, after in zip(rows[1:], out[1:], strict=True):
        assert after[0] == before[0] and after[3] == before[3]  # text untouched
        for k in (1, 2, 4):
            if before[k].strip().lower() in ("", "na", "nan"):
                blanks += 1
                float(after[k])  # filled with a number
            else:
                assert after[k] == before[k]  # observed cells written back as they were
    assert blanks > 100
    # original units: imputed incomes follow the observed ones' scale and their link to age
    both = [(float(a[1]), float(a[2])) for b, a in zip(rows[1:], out[1:], strict=True) if b[2] in ("", "NA", "nan")]
    incomes = np.array([income for _, income in both])
    assert 2000 < incomes.mean() < 4000
    ages = np.array([age for age, _ in both])
    assert np.corrcoef(ages, incomes)[0, 1] > 0.5


def test_csv_without_blanks_is_ground_truth_for_a_simulated_mask(tmp_path):
    rows = [r[:3] for r in people()]
    rows = [rows[0]] + [r for r in rows[1:] if "" not in r and "NA" not in r and "nan" not in r]
    write_csv(tmp_path / "complete.csv", rows)
    cfg = vector_config(
        tmp_path,
        "data=csv",
        f"data.path={tmp_path / 'complete.csv'}",
        "mask=entry",
        "miri.rounds=2",
        "miri.steps_per_round=100",
    )
    run = train(cfg)
    record = run.miri.history[-1]
    assert record["rmse_missing"] < run.miri.history[0]["rmse_missing"]  # better than the N(0, 1) fill
    # imputed.csv shows the imputations at the simulated holes, the data elsewhere
    with open(run.output_dir / "imputed.csv") as f:
        out = list(csv.reader(f))[1:]
    observed = run.datamodule.store.observed
    for i, (before, after) in enumerate(zip(rows[1:], out, strict=True)):
        for k in range(3):
            if k == 0 or observed[i, k - 1]:  # column 0 (names) passes through
                assert after[k] == before[k]
            else:
                assert after[k] != before[k]


def test_csv_bad_input_is_named(tmp_path):
    def load(rows):
        write_csv(tmp_path / "bad.csv", rows)
        return CsvSource(str(tmp_path / "bad.csv")).load()

    header = ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"column 'b' is numeric but line 3 holds 'oops'"):
        load([header, ["1", "2", "3"], ["2", "oops", "4"], ["3", "4", ""], ["4", "5", "6"]])
    with pytest.raises(ValueError, match=r"column 'c' has no value at all"):
        load([header, ["1", "2", ""], ["2", "3", "NA"], ["3", "", ""]])
    with pytest.raises(ValueError, match=r"line 3: 2 cells"):
        load([header, ["1", "2", "3"], ["2", "3"]])
    with pytest.raises(ValueError, match="header"):
        load([["1", "2", "3"], ["2", "3", "4"]])
    with pytest.raises(ValueError, match="more than once"):
        load([["a", "a", "c"], ["2", "3", "4"]])
    with pytest.raises(ValueError, match="no numeric column"):
        load([["a", "b"], ["x", "y"], ["z", ""]])
    with pytest.raises(ValueError, match="does not exist"):
        CsvSource(str(tmp_path / "absent.csv")).load()
    with pytest.raises(ValueError, match=r"the table has 1 row\(s\)"):
        load([header, ["1", "2", "3"]])
    with pytest.raises(ValueError, match=r"column 'c' is numeric but line 2 holds 'inf'"):  # infinities are no data
        load([header, ["1", "2", "inf"], ["2", "", "4"], ["3", "4", ""]])
    (tmp_path / "latin.csv").write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv is not UTF-8"):
        CsvSource(str(tmp_path / "latin.csv")).load()
    with pytest.raises(ValueError, match=r"column 'b' is numeric but line 5 holds 'x'"):  # blank lines counted
        load([header, ["1", "2", "3"], [], ["2", "3", "4"], ["3", "x", "5"], ["4", "5", "6"], ["5", "6", "7"]])

    # a constant column is set aside (warned, filled with its value); a row with nothing
    # observed is imputed (warned, with its line)
    with pytest.warns(UserWarning) as caught:
        loaded = load([header, ["1", "7", "3"], ["", "", ""], ["3", "7", "5"], ["4", "", "1"]])
    said = " ".join(str(w.message) for w in caught)
    assert "constant column(s) ['b']" in said and "1 row(s) have no observed value (first at line(s) 3)" in said
    assert loaded.values.shape == (4, 2) and loaded.clamp is None
    assert not loaded.observed[1].any()


def test_constant_column_and_empty_row_come_back_filled(tmp_path):
    rows = [["x", "k", "y"]]
    rng = np.random.default_rng(0)
    for i in range(120):
        x = rng.normal()
        rows.append([f"{x:.3f}", "7" if i % 5 else "", f"{2 * x:.3f}" if i % 3 else ""])
    rows[10] = ["", "", ""]
    write_csv(tmp_path / "t.csv", rows)
    cfg = vector_config(tmp_path, "data=csv", f"data.path={tmp_path / 't.csv'}", "miri.rounds=1")
    with pytest.warns(UserWarning, match="constant column"):
        run = train(cfg)
    with open(run.output_dir / "imputed.csv") as f:
        out = list(csv.reader(f))
    assert all(row[1] == "7" for row in out[1:])
    assert all(np.isfinite(float(cell)) for cell in out[10])


def test_npy_table_comes_back_exactly_with_its_holes_filled(tmp_path):
    from miri_lightning.data.table import read_table, write_table

    values = np.random.default_rng(0).normal(size=(30, 3)) * [1, 1000, 1e-3]
    values[::4, 1] = np.nan
    np.save(tmp_path / "t.npy", values)
    table = read_table(tmp_path / "t.npy")
    observed = torch.from_numpy(~np.isnan(values))
    imputed = torch.zeros(30, 3)  # standardised zeros: the column means
    write_table(tmp_path / "out.csv", table, imputed, observed, np.array([0.0, 5.0, 0.0]), np.ones(3))
    out = np.loadtxt(tmp_path / "out.csv", delimiter=",", skiprows=1)
    kept = ~np.isnan(values)
    assert np.array_equal(out[kept], values[kept])  # bit for bit
    assert np.all(out[~kept] == 5.0)
    all_missing = values.copy()
    all_missing[:, 2] = np.nan
    np.save(tmp_path / "bad.npy", all_missing)
    with pytest.raises(ValueError, match="column 'column_3' has no value at all"):
        read_table(tmp_path / "bad.npy")


def test_image_model_on_vectors_is_refused_with_advice(tmp_path):
    # in process: the CLI turns this ValueError into its one error line (test_cli.py)
    with pytest.raises(ValueError, match="use model=mlp"):
        train(vector_config(tmp_path, "data=toy", "model=unet_tiny"))
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_a_mean_fill_on_vectors_trains_and_draws_without_noise(tmp_path):
    # the images' local fill noise must not reach tables: data=toy sets a constant σ of 0 for
    # training and draws, so a mean fill trains, and two draws of the same rows are identical
    from miri_lightning.inference import RunFlows

    run = train(
        vector_config(
            tmp_path,
            "data=toy",
            "data.n=200",
            "miri.init=mean",
            "miri.coupling=independent",
            "miri.rounds=1",
            "miri.steps_per_round=20",
        )
    )
    with pytest.raises(ValueError, match="miri.coupling=fill draws every source from .* got miri.init='mean'"):
        train(vector_config(tmp_path / "fill", "data=toy", "miri.init=mean"))  # a batch's mean is not the store's
    store = run.datamodule.store
    x, observed = store.imputed[:16].float(), store.observed[:16]
    draws = RunFlows(run.output_dir).sample(x, observed, num_samples=2, seed=0)
    assert torch.equal(draws[0], draws[1]) and torch.equal(draws[0][observed], x[observed])


@pytest.mark.parametrize(
    "coupling", ["fill", pytest.param("independent", marks=[pytest.mark.xfail(strict=True), pytest.mark.slow])]
)
def test_fresh_draws_of_a_small_table_are_as_good_as_its_imputation(tmp_path, coupling):
    """K draws of a table (multiple imputation, new rows) start from fresh N(0, 1) fills. With
    sources that are fresh fills too (miri.coupling=fill, the table recipes) the flows carry
    them as well as the store's own imputation; with the paper's sources (the store's one
    round-0 fill, fixed) an MLP on 150 rows learns those very fills and fresh ones go astray."""
    from miri_lightning.inference import RunFlows

    settings = ["data=toy", "data.n=150", "data.dim=6", "miri.rounds=2", "miri.steps_per_round=150"]
    run = train(vector_config(tmp_path, *settings, f"miri.coupling={coupling}"))
    store = run.datamodule.store
    truth, observed = store.truth, store.observed.bool()
    stored = metrics.rmse_missing(store.imputed, truth, observed).item()
    draws = RunFlows(run.output_dir).sample(torch.where(observed, truth, 0), observed, 4, seed=5)
    fresh = max(metrics.rmse_missing(d, truth, observed).item() for d in draws)
    assert fresh < 1.2 * stored, (fresh, stored)


def test_the_rubin_rules_example_of_tables_md_runs_and_pools_near_the_complete_data_fit(capsys):
    """docs/tables.md's multiple-imputation example, run as written: K = 5 imputed tables of
    the diabetes data (30 % blanked), a least-squares fit on each, pooled by Rubin's rules."""
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "tables.md").read_text()
    example = page.split("## K draws of a table")[1].split("```python\n")[1].split("```")[0]
    exec(compile(example, "docs/tables.md", "exec"), {})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    estimate, se = (float(v) for v in line.split(":")[1].split("(")[0].split("±"))
    share = float(line.split("between/within ")[1].rstrip(")"))
    complete = 519.8  # BMI's coefficient fitted on the complete table
    assert abs(estimate - complete) < 2.5 * se and 30 < se < 150 and share > 0, line
