"""fleet: the controller that deploys the inference stack to Docker Swarm and rolls out versions safely."""
