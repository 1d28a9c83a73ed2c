"""LLM sizing against published sizes and its own stated model (auctions/mechanisms/llm_sizing.py)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auctions.mechanisms.errors import MechanismError
from auctions.mechanisms.llm_sizing import GIB, OVERHEAD, size_llm_job


def inference(**overrides):
    args = {"kind": "INFERENCE", "params_billion": 7.0, "quant_bits": 16, "context_length": 4096}
    args.update(overrides)
    return size_llm_job(**args)


class TestWeights:
    def test_a_70b_model_at_fp16_has_140_gb_of_weights(self):
        sizing = inference(params_billion=70.0, quant_bits=16)

        assert sizing.weights_gb == pytest.approx(140.0)

    def test_a_70b_model_at_4_bits_has_35_gb_of_weights(self):
        sizing = inference(params_billion=70.0, quant_bits=4)

        assert sizing.weights_gb == pytest.approx(35.0)

    def test_the_total_is_the_parts_times_the_runtime_overhead(self):
        sizing = inference(params_billion=13.0, quant_bits=8, context_length=8192, batch_size=4)

        parts = sizing.weights_gb + sizing.kv_cache_gb + sizing.training_state_gb + sizing.activations_gb
        assert sizing.total_gb == pytest.approx(parts * OVERHEAD)
        assert sizing.overhead_gb == pytest.approx(parts * (OVERHEAD - 1))


class TestKvCache:
    def test_grows_linearly_with_context(self):
        short = inference(context_length=2048)

        long = inference(context_length=8192)

        assert short.kv_cache_gb > 0
        assert long.kv_cache_gb == pytest.approx(4 * short.kv_cache_gb)

    def test_grows_linearly_with_batch(self):
        single = inference(batch_size=1)

        batched = inference(batch_size=3)

        assert batched.kv_cache_gb == pytest.approx(3 * single.kv_cache_gb)

    def test_leaves_the_weights_alone(self):
        short = inference(context_length=512)

        long = inference(context_length=32768, batch_size=8)

        assert long.weights_gb == short.weights_gb

    def test_shrinks_with_grouped_query_attention(self):
        full = inference(params_billion=70.0)

        grouped = inference(params_billion=70.0, kv_ratio=1 / 8)

        assert grouped.kv_cache_gb == pytest.approx(full.kv_cache_gb / 8)


class TestDeviceCount:
    @pytest.mark.parametrize("params_billion", [0.5, 7.0, 13.0, 34.0, 70.0, 180.0, 405.0])
    def test_is_the_smallest_power_of_two_that_fits(self, params_billion):
        sizing = inference(params_billion=params_billion, max_device_memory_gib=24.0)

        total_gib = sizing.total_gb * 1e9 / GIB
        count = sizing.device_count
        assert count & (count - 1) == 0
        assert total_gib / count <= 24.0
        assert count == 1 or total_gib / (count // 2) > 24.0

    def test_a_70b_fp16_model_needs_two_80_gib_devices_or_eight_24_gib_ones(self):
        args = {"params_billion": 70.0, "quant_bits": 16, "context_length": 4096, "kv_ratio": 1 / 8}

        datacentre = inference(**args, max_device_memory_gib=80.0)
        consumer = inference(**args, max_device_memory_gib=24.0)

        assert (datacentre.device_count, consumer.device_count) == (2, 8)

    def test_a_4_bit_7b_model_fits_one_consumer_gpu(self):
        sizing = inference(params_billion=7.0, quant_bits=4, max_device_memory_gib=24.0)

        assert sizing.device_count == 1
        assert sizing.memory_per_device_gib <= 24.0

    def test_an_explicit_count_is_kept_and_shares_the_memory(self):
        sizing = inference(params_billion=70.0, device_count=3)

        total_gib = sizing.total_gb * 1e9 / GIB
        assert sizing.device_count == 3
        assert sizing.memory_per_device_gib == math.ceil(total_gib / 3 * 2) / 2

    def test_memory_per_device_is_rounded_up_to_half_a_gib(self):
        sizing = inference(params_billion=1.3, quant_bits=8, context_length=1000)

        total_gib = sizing.total_gb * 1e9 / GIB
        assert (sizing.memory_per_device_gib * 2).is_integer()
        assert total_gib <= sizing.memory_per_device_gib < total_gib + 0.5


class TestTrainingAndFineTuning:
    def test_training_holds_16_bytes_per_parameter_and_no_kv_cache(self):
        sizing = size_llm_job(kind="TRAINING", params_billion=7.0, quant_bits=16, context_length=2048)

        assert sizing.weights_gb + sizing.training_state_gb == pytest.approx(7.0 * 16)
        assert sizing.kv_cache_gb == 0
        assert sizing.activations_gb > 0

    def test_training_state_does_not_depend_on_the_serving_quantisation(self):
        fp16 = size_llm_job(kind="TRAINING", params_billion=7.0, quant_bits=16, context_length=2048)

        int4 = size_llm_job(kind="TRAINING", params_billion=7.0, quant_bits=4, context_length=2048)

        assert int4.total_gb == pytest.approx(fp16.total_gb)

    def test_fine_tuning_costs_more_than_inference_and_less_than_training(self):
        args = {"params_billion": 13.0, "quant_bits": 16, "context_length": 2048}

        infer = size_llm_job(kind="INFERENCE", **args)
        tune = size_llm_job(kind="FINE_TUNE", **args)
        train = size_llm_job(kind="TRAINING", **args)

        assert infer.total_gb < tune.total_gb < train.total_gb
        assert tune.training_state_gb == pytest.approx(13.0 * 0.01 * 16)


class TestBadInput:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"kind": "PRETRAINING"},
            {"kind": "inference"},
            {"params_billion": 0},
            {"params_billion": -7.0},
            {"params_billion": math.nan},
            {"params_billion": math.inf},
            {"params_billion": True},
            {"params_billion": "7"},
            {"params_billion": 100_001},
            {"quant_bits": 7},
            {"quant_bits": 0},
            {"context_length": 0},
            {"context_length": 1.5},
            {"context_length": 10**7 + 1},
            {"batch_size": 0},
            {"batch_size": 10**40},
            {"device_count": 0},
            {"device_count": 4097},
            {"device_count": 2.0},
            {"max_device_memory_gib": 0},
            {"max_device_memory_gib": -80.0},
            {"kv_bits": 1},
            {"kv_ratio": 0},
            {"kv_ratio": 1.5},
        ],
        ids=repr,
    )
    def test_is_refused_with_bad_input(self, overrides):
        with pytest.raises(MechanismError) as error:
            inference(**overrides)

        assert error.value.code == "bad_input"


@given(
    params=st.floats(min_value=0.1, max_value=1000.0),
    bits=st.sampled_from([4, 8, 16]),
    context=st.integers(min_value=1, max_value=131_072),
    batch=st.integers(min_value=1, max_value=64),
    kind=st.sampled_from(["INFERENCE", "FINE_TUNE", "TRAINING"]),
)
def test_the_devices_always_hold_the_whole_job(params, bits, context, batch, kind):
    sizing = size_llm_job(
        kind=kind, params_billion=params, quant_bits=bits, context_length=context, batch_size=batch
    )

    assert sizing.device_count * sizing.memory_per_device_gib >= sizing.total_gb * 1e9 / GIB
    assert 1 <= sizing.device_count <= 4096
