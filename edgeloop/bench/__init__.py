"""`edgeloop bench`: benchmarks that print ratios and write JSON (and plots)."""

from __future__ import annotations

import click

from .agent import agent_bench
from .chaos import chaos
from .loop import loop
from .rollout import rollout as rollout_bench
from .scale import scale
from .trainer_memory import trainer_memory


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmarks that print ratios and write JSON.

    Each benchmark seeds all its randomness, prints one line of ratios per contender and writes
    its figures to OUT/<name>.json (and a plot to OUT/<name>.png). `loop` runs in one process;
    `agent` runs each arm in a fresh process, so that each one's peak memory is its own; `rollout`
    and `chaos` start real services and a simulated fleet on loopback (`chaos` breaks them on a
    seeded schedule, then accounts for every candidate).

    \b
    Example:
      edgeloop bench loop --seeds 3 --out runs/bench
      edgeloop bench agent --out runs/bench
      edgeloop bench rollout --agents 200 --relays 4 --out runs/bench
      edgeloop bench chaos --agents 40 --relays 2 --minutes 10 --out runs/bench
      edgeloop bench trainer-memory --sizes 1000,5000,20000 --out runs/bench
      edgeloop bench scale --out runs/bench
    """


bench.add_command(loop)
bench.add_command(agent_bench)
bench.add_command(rollout_bench)
bench.add_command(chaos)
bench.add_command(trainer_memory)
bench.add_command(scale)
