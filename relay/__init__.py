"""The site relay: aggregates its agents over MQTT, selects again, forwards to the hub, caches models."""
