"""What the CLI and the dashboard share: starting, showing and acting on moves and waves."""
