"""Device meshes and sharding rules, multi-host work split, and memory plans (layer 2: uses models)."""
