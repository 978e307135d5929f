"""Thin adapters to the outside world, one module each: Docker Swarm (swarm), Consul's catalog (consul) and
KV (store), image building (builder) and registries (registry), the stack's gateway (gateway) and published
ports (endpoints), Prometheus (prometheus, remote_write), gates and webhooks (hooks), and report pages
(browser)."""
