"""The ``agentcpm`` command. Nothing in the library imports this package."""
