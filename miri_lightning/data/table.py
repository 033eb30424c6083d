"""Tables: a CSV (or .npy) whose blank / NaN cells are missing values, standardised with
the statistics of the observed entries, and written back in original units."""

import csv
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

#: Cells that mean "missing" in a CSV (after stripping spaces), besides the empty cell.
MISSING_TOKENS = ("", "na", "nan", "n/a", "null", "none", "?")


@dataclass
class Table:
    """numeric: (N, d) float64, NaN = missing; columns: the d numeric columns' names; text:
    the other columns (name -> N cells), passed through untouched; header: every column in
    file order; cells: the numeric columns' original text (N, d), to write observed cells back
    exactly as they were; constant: numeric columns with a single observed value (name ->
    cells), set aside: they carry no information, their missing cells get that value."""

    numeric: np.ndarray
    columns: list[str]
    header: list[str]
    text: dict[str, list[str]] = field(default_factory=dict)
    cells: list[list[str]] = field(default_factory=list)
    constant: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    #: each row's line in the file (for messages)
    lines: list[int] = field(default_factory=list)

    def rows(self, keep: list[int]) -> None:
        """Keep only the rows ``keep`` (a subset, in order)."""
        self.numeric = self.numeric[keep]
        self.text = {name: [cells[i] for i in keep] for name, cells in self.text.items()}
        self.constant = {name: ([cells[i] for i in keep], v) for name, (cells, v) in self.constant.items()}
        self.cells = [self.cells[i] for i in keep]
        self.lines = [self.lines[i] for i in keep]

    def set_aside_constant_columns(self) -> None:
        """Move the numeric columns whose observed entries all hold one value to ``constant``
        (warning naming them); fails when no other numeric column is left."""
        observed = ~np.isnan(self.numeric)
        low = np.where(observed, self.numeric, np.inf).min(0)
        high = np.where(observed, self.numeric, -np.inf).max(0)
        constant = [k for k in range(len(self.columns)) if low[k] == high[k]]
        if not constant:
            return
        names = [self.columns[k] for k in constant]
        if len(constant) == len(self.columns):
            raise ValueError(f"every numeric column of the table is constant ({names}): there is nothing to impute")
        warnings.warn(f"constant column(s) {names}: their missing cells get that constant", stacklevel=2)
        for k in constant:
            cells = [row[k] for row in self.cells]
            value = next(c.strip() for c, o in zip(cells, observed[:, k], strict=True) if o)
            self.constant[self.columns[k]] = (cells, value)
        keep = [k for k in range(len(self.columns)) if k not in constant]
        self.numeric = self.numeric[:, keep]
        self.columns = [self.columns[k] for k in keep]
        self.cells = [[row[k] for k in keep] for row in self.cells]


def _number(cell: str) -> float | None:
    """The cell's value, NaN for a missing-value token, None when it is not a number."""
    stripped = cell.strip()
    if stripped.lower() in MISSING_TOKENS:
        return math.nan
    try:
        value = float(stripped)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_table(path: str | Path) -> Table:
    """Read a CSV/TSV (a header row, then one row per item) or an .npy (N, d) float array.

    A column is numeric when every cell is a number or a missing-value token (blank, NA,
    NaN, ?, ...); a column of which fewer than half the filled cells are numbers is text and
    passes through; a column in between is an error naming it, the line and the cell.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"data.path={path} does not exist: give a .csv, .tsv or .npy table")
    if path.suffix == ".npy":
        header, body, lines = _read_npy(path)
    else:
        header, body, lines = _read_csv(path)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"data.path {path}: the header names column(s) {repeated} more than once; rename them")
    if all(_number(name) is not None and name.strip() for name in header):
        raise ValueError(f"data.path {path}: the first row must name the columns (a header); it holds numbers")
    for line, row in zip(lines, body, strict=True):
        if len(row) != len(header):
            raise ValueError(f"data.path {path}, line {line}: {len(row)} cells, but the header names {len(header)}")
    numeric, names, text_columns, cells = [], [], {}, []
    for k, name in enumerate(header):
        column = [row[k] for row in body]
        values = [_number(cell) for cell in column]
        bad = [(line, cell) for line, cell, v in zip(lines, column, values, strict=True) if v is None]
        filled = sum(1 for v in values if v is None or not math.isnan(v))
        if not bad:
            if all(math.isnan(v) for v in values):
                raise ValueError(
                    f"data.path {path}: column {name!r} has no value at all, so nothing can be learned about it; "
                    "remove the column from the file"
                )
            numeric.append(values)
            names.append(name)
            cells.append(column)
        elif len(bad) * 2 > filled:
            text_columns[name] = column  # a text column (names, categories): passed through
        else:
            line, cell = bad[0]
            raise ValueError(
                f"data.path {path}: column {name!r} is numeric but line {line} holds {cell!r} "
                f"({len(bad)} such cell(s)); leave the cell blank to mark it missing, or fix it"
            )
    if not names:
        raise ValueError(f"data.path {path} has no numeric column to impute (columns: {header})")
    rows = [list(c) for c in zip(*cells, strict=True)]
    return Table(np.array(numeric, dtype=np.float64).T, names, header, text_columns, rows, lines=lines)


def _read_npy(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """An (N, d) array as a table of text cells (exact reprs, NaN blank), named column_1..d."""
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"data.path {path} holds a {array.dtype} array of shape {array.shape}: need (N, d) numbers")
    body = [["" if np.isnan(v) else repr(float(v)) for v in row] for row in array.astype(np.float64)]
    return [f"column_{k + 1}" for k in range(array.shape[1])], body, [i + 1 for i in range(len(body))]


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows of cells and each row's line in the file (blank lines skipped, except as
    a blank cell of a one-column table)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"data.path {path} is not UTF-8 text ({error}): save the table as UTF-8 CSV") from error
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel_tab if path.suffix == ".tsv" else csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        numbered = [(reader.line_num, row) for row in reader]
    except csv.Error as error:
        raise ValueError(f"data.path {path}, line {reader.line_num}: {error}") from error
    if not numbered:
        raise ValueError(f"data.path {path} needs a header row and at least one row of values")
    header = [name.strip() for name in numbered[0][1]]
    body = [(line, row or [""]) for line, row in numbered[1:] if row or len(header) == 1]
    if not body:
        raise ValueError(f"data.path {path} needs a header row and at least one row of values")
    return header, [row for _, row in body], [line for line, _ in body]


def standardise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values - mean) / std per column over the observed (non-NaN) entries (a column with
    std 0 is only centred). Returns the standardised values and (mean, std), each (d,)."""
    observed = ~np.isnan(values)
    count = observed.sum(0)
    mean = np.where(observed, values, 0).sum(0) / np.maximum(count, 1)
    std = np.sqrt(np.where(observed, (values - mean) ** 2, 0).sum(0) / np.maximum(count, 1))
    std = np.where(std > 0, std, 1.0)
    return (values - mean) / std, mean, std


def warn_empty_rows(observed: Tensor, lines: list[int], what: str) -> None:
    """Rows with no observed entry are imputed from the marginal alone: say how many, and
    the first ones' lines in the file."""
    empty = (~observed.bool()).all(1).nonzero().flatten().tolist()
    if empty:
        first = ", ".join(str(lines[i]) for i in empty[:5])
        warnings.warn(
            f"{what}: {len(empty)} row(s) have no observed value (first at line(s) {first}); they are imputed "
            "from the other rows alone",
            stacklevel=2,
        )


def write_table(path: Path, table: Table, imputed: Tensor, observed: Tensor, mean: np.ndarray, std: np.ndarray) -> None:
    """The table with the numeric cells that were missing (``observed`` False: blanks, or a
    simulated mask) imputed in original units; observed cells and text columns exactly as
    they were written; a constant column's blanks get its value. Written to a temp file,
    then renamed."""
    values = imputed.detach().cpu().double().numpy() * std + mean
    missing = ~observed.detach().cpu().numpy()
    index = {name: k for k, name in enumerate(table.columns)}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table.header)
        for i in range(values.shape[0]):
            row = []
            for name in table.header:
                if name in table.text:
                    row.append(table.text[name][i])
                elif name in table.constant:
                    cells, value = table.constant[name]
                    row.append(value if math.isnan(_number(cells[i])) else cells[i].strip())
                else:
                    k = index[name]
                    row.append(f"{values[i, k]:.10g}" if missing[i, k] else table.cells[i][k].strip())
            writer.writerow(row)
    tmp.replace(path)


def as_tensor(values: np.ndarray) -> tuple[Tensor, Tensor]:
    """(values with NaN zeroed, observed mask), both (N, d): float32 and bool."""
    observed = ~np.isnan(values)
    return torch.from_numpy(np.where(observed, values, 0).astype(np.float32)), torch.from_numpy(observed)
