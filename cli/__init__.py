"""The `feedserve` command: start the stack, query it, and operate it."""
