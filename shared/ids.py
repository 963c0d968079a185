"""Time-ordered, globally unique sample ids (ULID): sortable by creation, safe to dedup on."""

from ulid import ULID


def new_sample_id() -> str:
    return str(ULID())
