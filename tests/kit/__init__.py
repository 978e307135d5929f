"""What the tests and the benchmarks share, and nothing else: no test lives here.

- stacks: a stack under test (its ports, its Consul with the stack's tokens), deploying, convergence,
  and sweeping everything a stack made by its namespace label (`own_stack` for a module's own stack)
- cli: fleet's command line in a subprocess, and `running_rollout`, a rollout running for a block
- helpers: `wait_until` (a condition with a deadline), the bounded load loop, a webhook receiver, samples
- cluster: the 3-node test cluster (scripts/cluster.sh) and what its tests do on it
- consul_restart: Consul restarted under load, measured from the client's side
- digits: model packages of a small CNN over scikit-learn's digits
- masked: a model of two inputs (token ids and a mask)
"""
