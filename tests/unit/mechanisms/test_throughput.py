"""The throughput model: device-hours of inference from FLOPs per token, of training from speed."""

import math

import pytest

from auctions.mechanisms import MechanismError
from auctions.mechanisms.throughput import (
    DEFAULT_UTILISATION,
    MIN_DEVICE_HOURS,
    REFERENCE_FP16_TFLOPS,
    base_device_hours,
    inference_device_hours,
    job_device_hours,
    training_device_hours,
)


class TestInferenceDeviceHours:
    def test_costs_two_flops_per_parameter_per_token_at_the_stated_utilisation(self):
        # 7e9 parameters x 1e6 tokens x 2 = 1.4e16 FLOPs; 100 TFLOPS at 0.30 = 3e13 FLOP/s -> 466.7 s.
        hours = inference_device_hours(tokens=1_000_000, params_billion=7, fp16_tflops=100)

        assert hours == pytest.approx(1.4e16 / 3e13 / 3600)

    def test_scales_linearly_in_tokens_and_parameters_and_inversely_in_tflops(self):
        base = inference_device_hours(tokens=10**6, params_billion=7, fp16_tflops=50)

        assert inference_device_hours(tokens=2 * 10**6, params_billion=7, fp16_tflops=50) == pytest.approx(
            2 * base
        )
        assert inference_device_hours(tokens=10**6, params_billion=14, fp16_tflops=50) == pytest.approx(
            2 * base
        )
        assert inference_device_hours(tokens=10**6, params_billion=7, fp16_tflops=100) == pytest.approx(
            base / 2
        )

    def test_a_higher_utilisation_takes_less_time(self):
        slow = inference_device_hours(tokens=10**6, params_billion=7, fp16_tflops=50, utilisation=0.15)
        fast = inference_device_hours(tokens=10**6, params_billion=7, fp16_tflops=50, utilisation=0.60)

        assert slow == pytest.approx(4 * fast)

    def test_never_reserves_less_than_the_floor(self):
        assert inference_device_hours(tokens=0, params_billion=1, fp16_tflops=1000) == MIN_DEVICE_HOURS

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"tokens": -1, "params_billion": 7, "fp16_tflops": 50},
            {"tokens": 1, "params_billion": 0, "fp16_tflops": 50},
            {"tokens": 1, "params_billion": 7, "fp16_tflops": 0},
            {"tokens": 1, "params_billion": 7, "fp16_tflops": math.nan},
            {"tokens": 1, "params_billion": 7, "fp16_tflops": 50, "utilisation": 1.5},
        ],
    )
    def test_refuses_values_outside_the_model(self, kwargs):
        with pytest.raises(MechanismError) as error:
            inference_device_hours(**kwargs)

        assert error.value.code == "bad_input"


class TestTrainingDeviceHours:
    def test_divides_the_stated_workload_by_the_speed_factor(self):
        assert training_device_hours(workload_device_hours=6.0, speed_factor=3.0) == pytest.approx(2.0)

    def test_refuses_a_non_positive_speed(self):
        with pytest.raises(MechanismError):
            training_device_hours(workload_device_hours=1.0, speed_factor=0)


class TestJobDeviceHours:
    def test_an_inference_job_uses_the_resources_tflops(self):
        hours = job_device_hours(
            kind="INFERENCE",
            params_billion=7,
            workload_tokens=10**6,
            workload_device_hours=None,
            fp16_tflops=82.6,
            speed_factor=1.6,
        )

        assert hours == pytest.approx(1.4e16 / (82.6e12 * DEFAULT_UTILISATION) / 3600)

    def test_a_resource_without_a_stated_rate_counts_as_speed_times_the_reference(self):
        hours = job_device_hours(
            kind="INFERENCE",
            params_billion=7,
            workload_tokens=10**6,
            workload_device_hours=None,
            fp16_tflops=0,
            speed_factor=2.0,
        )

        assert hours == pytest.approx(
            inference_device_hours(tokens=10**6, params_billion=7, fp16_tflops=2 * REFERENCE_FP16_TFLOPS)
        )

    def test_a_training_job_uses_the_speed_factor(self):
        hours = job_device_hours(
            kind="TRAINING",
            params_billion=7,
            workload_tokens=None,
            workload_device_hours=10.0,
            fp16_tflops=312,
            speed_factor=2.5,
        )

        assert hours == pytest.approx(4.0)

    def test_the_base_is_the_reference_device(self):
        assert base_device_hours(
            kind="FINE_TUNE", params_billion=7, workload_tokens=None, workload_device_hours=3.0
        ) == pytest.approx(3.0)

    def test_refuses_a_job_without_its_workload(self):
        with pytest.raises(MechanismError):
            job_device_hours(
                kind="INFERENCE",
                params_billion=7,
                workload_tokens=None,
                workload_device_hours=None,
                fp16_tflops=50,
                speed_factor=1,
            )
