from sia.cli.app import main

__all__ = ["main"]
