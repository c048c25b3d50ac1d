"""The recipe benchmark suite runs and reports every row against its peer."""

from launch.benchmarks import recipe


def test_recipe_suite_reports_each_row_against_the_48px_conv4_peer():
    result = recipe.run(sizes=(16,), steps=2, warmup=1, repeats=2)
    keys = [(r["image_size"], r["encoder"]) for r in result["rows"]]
    assert keys == [(16, "conv4"), (16, "conv4_flat"), (48, "conv4"), (48, "conv4_flat")]
    peer = result["rows"][2]
    assert peer["speedup_vs_peer"] == 1.0
    assert all(r["step_ms"] > 0 and r["speedup_vs_peer"] > 0 for r in result["rows"])
    # The reported step time is the median of the windows, so it lies within their range.
    assert all(
        r["step_ms_range"][0] <= r["step_ms"] <= r["step_ms_range"][1] for r in result["rows"]
    )
    # conv4_flat's embedding layer sees (size/16)^2 cells: more parameters than conv4 at 48.
    assert result["rows"][3]["parameters"] > peer["parameters"]
    assert "peer" in recipe.format_table(result)
