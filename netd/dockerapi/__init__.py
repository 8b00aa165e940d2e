"""Docker's Engine API network routes on a second socket: ``compat`` translates (pure), ``routes`` serves."""
