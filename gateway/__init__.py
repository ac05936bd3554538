"""The gateway: the one public service, fanning Feed and Interact out to the internal services."""
