"""The chaos run's figures, printed for a person (edgeloop/bench/chaos.py writes them as JSON)."""

from __future__ import annotations

import click

from .chaos_schedule import KINDS


def print_figures(fig: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    faults = Table(title=f"faults (seed {fig['seed']}, {fig['minutes']:g} min, {fig['agents']} agents, "
                         f"{fig['relays']} relays)")
    for col in ("kind", "n", "seconds held", "effects"):
        faults.add_column(col, justify="right" if col in ("n", "seconds held") else "left")
    for k in KINDS:
        effects = ", ".join(f"{n} {e}" for e, n in fig["fault_effects"].get(k, {}).items())
        faults.add_row(k, str(fig["faults"][k]), f"{fig['fault_seconds'][k]:.0f}", effects)
    console.print(faults)
    counts = Table(title="every committed candidate, accounted for")
    counts.add_column("figure")
    counts.add_column("n", justify="right")
    for k in ("committed", "at_hub", "evicted", "dropped_by_relay_budget", "dropped_by_relay_quota", "dead_letters",
              "lost", "duplicates_at_hub", "evicted_after_delivery", "still_queued", "at_hub_never_committed"):
        counts.add_row(k, f"{fig[k]:,}")
    console.print(counts)
    if b := fig["backlog"]:
        click.echo(f"backlog ({b['device']}, offline {b['offline_capture_s'] / 3600:.2g} h of capture time): "
                   f"{b.get('kept_at_relay')} of {b.get('backlog')} kept at the relay, live would have kept "
                   f"{b.get('live_would_keep')} (ratio {b.get('ratio')}), waiting for every late candidate "
                   f"{b.get('all_at_once_would_keep')}; {b.get('late_from_others')} late from other devices")
    for name, c in fig["standing_faults"].items():
        click.echo(f"{name} ({c['offset_s']:+g} s, {', '.join(c['devices'])}): {c['committed']} committed, "
                   f"{c['corrected_at_relay']} capture times corrected at the relay, fates there {c['fates_at_relay']}")
    if fig["unexpected_exits"]:
        console.print(f"[red]{len(fig['unexpected_exits'])} unexpected exits: "
                      f"{', '.join(e['service'] for e in fig['unexpected_exits'])}[/red]")
    share = fig["lost"] / max(1, fig["committed"])
    click.echo(f"lost/committed {share:.4f} ({fig['lost']} / {fig['committed']}); at hub {fig['at_hub']} once, "
               f"evicted {fig['evicted']}, dropped by relay budgets {fig['dropped_by_relay_budget']}, "
               f"duplicates at hub {fig['duplicates_at_hub']}; "
               f"{sum(fig['faults'].values())} faults")
