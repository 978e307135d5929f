"""fleet's pure core: the decisions and the values they are made of, with no adapter, clock, network,
thread or process. Every function here returns the same value for the same arguments, so each is unit
tested over plain values; the modules outside (the controller, the evidence sources, the adapters) carry
its decisions out. tests/unit/test_core_purity.py fails when a module here imports anything but the
standard library's pure modules and the core itself.

- rollout: the canary state machine (`start`, `step`, `resumed`: state and event in, state and actions out)
- events: the evidence a rollout is judged on, as frozen values
- analysis: judging a canary's metrics and golden answers against the stable's
- policy, durations, gates: a service's rollout policy from its labels; gate and webhook payloads
- changes, convergence, taskstates, capacity, placement: a deploy's plan, a service's convergence, Swarm
  task states that fail a canary, GPU room on the nodes, the nodes a global service's constraints allow
- control, promotion, traffic, view: control requests, promotion batches, traffic weights, what
  `fleet status` shows of a rollout
- tasks: Swarm tasks and Consul instances as fleet reads them
"""
