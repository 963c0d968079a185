"""Command-line options shared by the hub's commands (`hub serve|seed|export|import|token ...`)."""

from __future__ import annotations

import click

db_option = click.option(
    "--db", default=None, envvar="EDGELOOP_HUB_DB", metavar="URL",
    help="The hub's database: postgresql://user@host:port/dbname, shared by several hub processes (which "
         "must then share --data too, for the blobs); default SQLite at DATA/hub.sqlite (env EDGELOOP_HUB_DB).")
