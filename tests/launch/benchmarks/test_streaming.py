"""The streaming benchmark suite measures both store sizes and reports every promised key."""

from launch.benchmarks import streaming


def test_streaming_suite_reports_every_key_on_tiny_stores():
    result = streaming.run(sizes=(640, 1280), batches=2, rounds=1)
    for key in (
        "images_per_second",
        "decode_limit_ratio",
        "peak_rss_mb_small",
        "peak_rss_mb_large",
        "rss_growth_ratio",
        "dataset_mb_large",
        "arrayrecord_read_ratio",
    ):
        assert result[key] > 0, key
    assert result["images_small"] == 640 and result["images_large"] == 1280
    assert result["dataset_mb_large"] > result["dataset_mb_small"]
    assert result["rss_growth_ratio"] == round(
        result["peak_rss_mb_large"] / result["peak_rss_mb_small"], 3
    )
    assert "decode_limit_ratio" in streaming.format_table(result)
    # One fresh process per pipeline and round: each figure is the median of its own runs.
    assert len(result["measured_large"]["images_per_second_runs"]) == 1
    assert len(result["measured_large"]["plain_images_per_second_runs"]) == 1
