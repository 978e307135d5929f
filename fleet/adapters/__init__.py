"""Thin adapters to the outside world: Docker Swarm and Consul."""
