"""What conversations leave behind: repair tickets, handoffs, answer ratings (not domain knowledge)."""
