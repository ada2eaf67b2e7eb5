"""`python -m sumseg` = the `sumseg` command."""

from sumseg.cli import app

app(prog_name="sumseg")
