"""The quality benchmark: ``python scripts/quality.py [experiment=quality_sample] [overrides]``,
the same as the installed ``miri-quality``.

Trains a MIRI recipe (any ``train.py`` override works), draws ``quality.samples``
imputations of every item, and prints one table against the baselines on the same masks,
also written as ``quality.csv`` and ``quality.md`` in the run directory.
"""

from miri_lightning.tools_cli import quality_main as main

if __name__ == "__main__":
    main()
