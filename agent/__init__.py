"""The device agent: capture, inference, first-stage selection, the SQLite outbox, OTA model slots."""
