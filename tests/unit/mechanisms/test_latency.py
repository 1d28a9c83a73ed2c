"""The latency model: RTT from great-circle distance, fibre speed and route inflation."""

import pytest

from auctions.mechanisms.latency import (
    BASE_RTT_MS,
    REGION_CENTROIDS,
    estimate_rtt_ms,
    great_circle_km,
    region_centroid,
    rtt_from_distance_ms,
)


class TestGreatCircle:
    def test_measures_london_to_new_york_as_published(self):
        # About 5,570 km by the haversine formula on a 6,371 km sphere.
        assert great_circle_km((51.5074, -0.1278), (40.7128, -74.0060)) == pytest.approx(5570, rel=0.01)

    def test_is_zero_at_one_point_and_symmetric(self):
        a, b = (48.86, 2.35), (35.68, 139.69)

        assert great_circle_km(a, a) == 0
        assert great_circle_km(a, b) == pytest.approx(great_circle_km(b, a))

    def test_half_the_circumference_between_antipodes(self):
        assert great_circle_km((0, 0), (0, 180)) == pytest.approx(3.14159265 * 6371, rel=1e-6)


class TestRtt:
    def test_adds_the_base_to_twice_the_inflated_fibre_delay(self):
        # 1,000 km: 2 x 1,000 x 1.5 / 200 km per ms = 15 ms, plus the base.
        assert rtt_from_distance_ms(1000) == pytest.approx(15 + BASE_RTT_MS)

    def test_orders_places_by_distance(self):
        near = estimate_rtt_ms(consumer_region="eu-west", provider_region="eu-central")
        far = estimate_rtt_ms(consumer_region="eu-west", provider_region="us-east")
        farther = estimate_rtt_ms(consumer_region="eu-west", provider_region="ap-east")

        assert near < far < farther
        assert 5 < near < 20 and 70 < far < 120

    def test_prefers_the_providers_coordinates_to_its_region(self):
        lisbon = estimate_rtt_ms(
            consumer_region="eu-west", provider_region="eu-west", provider_lat=38.72, provider_lon=-9.14
        )
        centroid = estimate_rtt_ms(consumer_region="eu-west", provider_region="eu-west")

        assert centroid == pytest.approx(BASE_RTT_MS)
        assert lisbon > centroid + 15

    def test_an_unknown_place_is_none_not_zero(self):
        assert estimate_rtt_ms(consumer_region="mars-north", provider_region="eu-west") is None
        assert estimate_rtt_ms(consumer_region="eu-west", provider_region="mars-north") is None

    def test_two_parties_in_one_unknown_region_are_the_base_apart(self):
        assert estimate_rtt_ms(consumer_region="lab-1", provider_region="lab-1") == BASE_RTT_MS

    def test_region_names_are_case_insensitive_and_all_centroids_are_valid(self):
        assert region_centroid("EU-West") == REGION_CENTROIDS["eu-west"]
        for lat, lon in REGION_CENTROIDS.values():
            assert -90 <= lat <= 90 and -180 <= lon <= 180
