"""Delivery commands (``gateway dispatch``)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Attach the delivery commands to the main group."""
