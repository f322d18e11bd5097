"""The CLI's two consoles and its API client factory, shared by its command modules."""

from __future__ import annotations

from rich.console import Console

from cli.client import Api
from service.settings import get_settings

# Text a pipe reads is never wrapped, and tables get room (rich assumes 80 columns off a
# terminal, which cut `gpulab devices` into truncated bars); COLUMNS still wins when set.
out = Console(soft_wrap=True)
if not out.is_terminal and out.width == 80:
    out.width = 160
err = Console(stderr=True, soft_wrap=True)


def client() -> Api:
    """A client of the API named by the settings, with the saved or given token."""
    return Api(get_settings())


def print_error(message: str) -> None:
    """One line on stderr: `error: ` and the message, never read as markup."""
    from rich.text import Text

    err.print(Text.assemble(("error: ", "red"), message), highlight=False)
