"""Evaluate a run: ``python scripts/evaluate.py output_dir=checkpoints/<run> [per_round=true]``,
the same as the installed ``miri-evaluate``.

Writes ``metrics.csv`` and ``metrics.md`` into the run directory, the table to TensorBoard
(``evaluation/table``) and to the terminal.
"""

from miri_lightning.tools_cli import evaluate_main as main

if __name__ == "__main__":
    main()
