"""edgeloop: the data loop of a camera fleet, edge to cloud.

The tiers live in subpackages: `edgeloop.shared` (common core), `edgeloop.agent`,
`edgeloop.relay`, `edgeloop.hub`, `edgeloop.sim` (simulated world and fleets).
"""

__version__ = "0.1.0"
