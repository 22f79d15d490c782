"""mailmove: moves mail domains and servers behind a central mail gateway, durably."""
