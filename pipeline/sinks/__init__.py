"""Writers for enriched posts and dead letters, independent of Beam so the streaming job can ack after them."""
