"""Use cases of the market: each writes through one function named <entity>_<verb>."""
