"""`rbmnet_install_model ARCHIVE`: install a model archive (made by `rbmnet_export --archive`) into the
results root, so that `rbmnet_predict -d NAME` uses it at once."""
from __future__ import annotations

from pathlib import Path

import click

from rbmnet.cli.common import friendly_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-d", "--dataset", default=None,
              help="Install under this dataset name (default: the one the archive was made from).")
@click.option("--overwrite", is_flag=True, help="Replace a model installed under the same name.")
@friendly_errors
def main(archive: Path, dataset: str | None, overwrite: bool) -> None:
    """Check ARCHIVE (members, checksums, safe checkpoints) and unpack it; nothing is written unless
    every check passes."""
    from rbmnet.errors import RbmnetError
    from rbmnet.export.archive import install_archive
    from rbmnet.paths import results_root

    if not archive.is_file():
        raise RbmnetError(f"{archive}: no such archive")
    folder = install_archive(archive, results_root(), overwrite=overwrite, dataset=dataset)
    click.echo(f"installed {folder.name} into {folder}")
    click.echo(f"predict with: rbmnet_predict -d {folder.parent.name} -m {folder.name} -i IMAGES -o OUTPUT")


if __name__ == "__main__":
    main()
