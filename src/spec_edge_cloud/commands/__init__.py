"""CLI sub-commands (the top layer: may import every layer below). Registered in cli.COMMANDS."""
