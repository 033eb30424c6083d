"""The table benchmark: ``python scripts/tables.py [--tables wine ...] [--rates ...] [--seeds ...]
[-- train overrides]``, the same as the installed ``miri-tables`` (see
:mod:`miri_lightning.table_benchmark`): MIRI's ``data=csv`` recipe against the mean, KNN and
chained equations (IterativeImputer, sample_posterior) on complete tables masked at random.
"""

from miri_lightning.table_benchmark import main

if __name__ == "__main__":
    main()
