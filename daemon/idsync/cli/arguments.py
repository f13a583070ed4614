"""Argument types of the command line: a value out of range is a usage error (exit 2),
said by argparse with the option's name, never a crash or a run that spins."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["MAX_PAGE_SIZE", "max_deletes", "whole_number"]

# ``--page-size``: as ``[recon] page_size`` takes it (``settings.py``).
MAX_PAGE_SIZE = 100_000


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if not low <= value <= high:
            highest = f"{high:,}".replace(",", " ")  # 36 500: the digits grouped, the text as typed
            raise argparse.ArgumentTypeError(f"expected {low} to {highest}, not {text}")
        return value
    return parse


def max_deletes(text: str) -> int | float:
    """``--max-deletes``: a count, or a percentage of the target such as ``5%``."""
    text = text.strip()
    try:
        value: int | float = float(text[:-1]) / 100 if text.endswith("%") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a percentage such as 5%, not {text!r}") from None
    if value < 0 or (isinstance(value, float) and value > 1):
        raise argparse.ArgumentTypeError(f"expected a count from 0 or a percentage from 0% to 100%, not {text!r}")
    return value
