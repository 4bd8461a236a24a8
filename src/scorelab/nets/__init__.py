"""Raw score networks, each built from explicit keyword arguments; parametrisations in precond."""
