"""How services reach each other: transport, tracing, deadlines, config and logging."""
