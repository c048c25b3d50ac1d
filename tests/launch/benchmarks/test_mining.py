"""The mining benchmark suite covers every loss, its floor and its peer (tiny sizes)."""

from launch.benchmarks import mining


def test_mining_suite_reports_every_loss_against_its_floor_and_peer():
    # Times only: a memory figure takes a fresh process (a TensorFlow start) per row.
    result = mining.run(
        sizes=(16,), repeats=1, tiled_limit_gb=1.0, anchor_size=8, measure_memory=False
    )
    losses = {entry["loss"]: entry for entry in result["losses"]}
    assert set(losses) == {"triplet_semihard", "multi_similarity", "circle", "supcon", "arcface"}
    for name, entry in losses.items():
        assert entry["seconds"] > 0 and entry["ratio_to_floor"] > 0, name
        assert entry["floor_seconds"] > 0, name
    assert {n for n, e in losses.items() if e["peer"] == "tfsim"} == {
        "multi_similarity",
        "circle",
        "arcface",
    }
    table = mining.format_table(result)
    assert "supcon" in table and "tfsim" in table
