"""The CLI's commands, grouped by what they touch; main.py assembles them into one Typer app."""
