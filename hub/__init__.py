"""The cloud hub: ingest and storage, selection for labeling, the labeling pages, training (a package of
its own), the model registry and staged rollouts."""
