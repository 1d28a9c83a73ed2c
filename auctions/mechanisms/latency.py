"""Latency: an estimate of the round-trip time between a consumer and a provider.

Model: RTT_ms = BASE_RTT_MS + 2 x d x ROUTE_INFLATION / FIBRE_KM_PER_MS, where d is the great-circle
distance in km (haversine on a sphere of radius 6371 km), light in fibre covers ~200 km per ms
(refractive index ~1.5), and real routes are ~1.5x longer than the great circle (Singla et al. 2014,
"The internet at the speed of light", measure fibre paths at ~1.5-2x the geodesic). BASE_RTT_MS is
the access network and the serving stack at both ends. London-Frankfurt (~640 km) comes out at ~12 ms,
New York-London (~5,570 km) at ~86 ms: the order of published inter-region pings.

A place is a (latitude, longitude) in degrees. A provider gives its coordinates, or its region's
centroid; a consumer is placed at its region's centroid (REGION_CENTROIDS). `estimate_rtt_ms`
returns None when a place is unknown: callers holding an SLA must treat None as "cannot promise",
never as 0. Two parties in the same named region with no coordinates are BASE_RTT_MS apart.
Pure: no Django, no settings, no clock.
"""

import math

EARTH_RADIUS_KM = 6371.0
FIBRE_KM_PER_MS = 200.0
ROUTE_INFLATION = 1.5
BASE_RTT_MS = 2.0

# Region centroids (degrees): the main metro of the region as the cloud providers name them.
REGION_CENTROIDS: dict[str, tuple[float, float]] = {
    "eu-west": (48.86, 2.35),  # Paris, between Dublin, London, Lisbon and Lyon
    "eu-central": (50.11, 8.68),  # Frankfurt
    "eu-north": (59.33, 18.07),  # Stockholm
    "eu-south": (45.46, 9.19),  # Milan
    "us-east": (39.04, -77.49),  # Ashburn
    "us-central": (41.26, -95.94),  # Omaha / Council Bluffs
    "us-west": (37.77, -122.42),  # San Francisco
    "ca-central": (45.50, -73.57),  # Montreal
    "sa-east": (-23.55, -46.63),  # São Paulo
    "ap-south": (12.97, 77.59),  # Bengaluru
    "ap-east": (35.68, 139.69),  # Tokyo
    "ap-northeast": (35.68, 139.69),  # Tokyo
    "ap-southeast": (1.35, 103.82),  # Singapore
    "au-east": (-33.87, 151.21),  # Sydney
    "me-central": (25.20, 55.27),  # Dubai
    "af-south": (-26.20, 28.05),  # Johannesburg
}


def great_circle_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance in km between two (latitude, longitude) points in degrees."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def rtt_from_distance_ms(distance_km: float) -> float:
    """RTT in ms for a great-circle distance (the model in the module docstring)."""
    return BASE_RTT_MS + 2 * distance_km * ROUTE_INFLATION / FIBRE_KM_PER_MS


def region_centroid(region: str) -> tuple[float, float] | None:
    """The centroid of a named region, or None for a region the table does not know."""
    return REGION_CENTROIDS.get(region.strip().lower()) if region else None


def estimate_rtt_ms(
    *,
    consumer_region: str,
    provider_region: str,
    provider_lat: float | None = None,
    provider_lon: float | None = None,
) -> float | None:
    """Estimated RTT (ms) from a consumer's region to a provider, or None when a place is unknown."""
    consumer = region_centroid(consumer_region)
    if provider_lat is not None and provider_lon is not None:
        provider = (float(provider_lat), float(provider_lon))
    else:
        provider = region_centroid(provider_region)
    if consumer is None or provider is None:
        same = consumer_region and consumer_region.strip().lower() == (provider_region or "").strip().lower()
        return BASE_RTT_MS if same and provider_lat is None else None
    return rtt_from_distance_ms(great_circle_km(consumer, provider))
