"""TRL drop-in compatibility (issue 13 item 5, in progress): TRL's option names accepted as aliases."""

from alignment.trainers import DPOConfig, RPOConfig


def test_precompute_ref_log_probs_is_an_alias():
    assert DPOConfig(output_dir="x", use_cpu=True, precompute_ref_log_probs=True).precompute_ref_logps
    assert RPOConfig(output_dir="x", use_cpu=True, precompute_ref_log_probs=True).precompute_ref_logps
    ours = DPOConfig(output_dir="x", use_cpu=True, precompute_ref_logps=True)
    assert ours.precompute_ref_logps and ours.precompute_ref_log_probs is None
    assert not DPOConfig(output_dir="x", use_cpu=True).precompute_ref_logps
