"""Export a round's imputed images: ``python scripts/export.py output_dir=checkpoints/<run> [round=N] [to=DIR]``,
the same as the installed ``miri-export``.

Writes PNGs of the imputed images, PNG masks (white = observed) and one ``.npz``.
"""

from miri_lightning.tools_cli import export_main as main

if __name__ == "__main__":
    main()
