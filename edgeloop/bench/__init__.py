"""`edgeloop bench`: benchmarks that print ratios and write JSON (and plots)."""

from __future__ import annotations

import click

from .loop import loop


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmarks that print ratios and write JSON.

    Each benchmark runs in one process, seeds all its randomness, prints one line of ratios per
    contender and writes its figures to OUT/<name>.json (and a plot to OUT/<name>.png).

    \b
    Example:
      edgeloop bench loop --seeds 3 --out runs/bench
    """


bench.add_command(loop)
