"""Redis read-through cache with stampede, penetration and avalanche defences."""
