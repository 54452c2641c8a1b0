"""The search's table and choice: one row per artefact a candidate would publish, the best passing one wins."""
from modeldeploy.optimize import search


def result(tf_bytes, tf_ms, tfl_bytes=None, tfl_ms=None, tfl_skipped=None, drop=0.01):
    runtimes = {"tensorflow": {"compressedBytes": tf_bytes, "ratio": 1000 / tf_bytes}}
    out = {"download": {"runtimes": runtimes}, "latency": {"savedModelB1": tf_ms}, "accuracyDrop": drop}
    if tfl_bytes is not None:
        runtimes["tflite"] = {"compressedBytes": tfl_bytes, "ratio": 1000 / tfl_bytes}
        out["latency"]["tfliteB1"] = tfl_ms
        out["tflite"] = {"accuracyDrop": drop * 2}
    elif tfl_skipped:
        out["tflite"] = {"skipped": tfl_skipped}
    return out


def table():
    return (search.rows({"sparsity": 0.0, "mode": "dynamic"}, result(300, 2.0, 280, 0.3), [])
            + search.rows({"sparsity": 0.5, "mode": "int8"}, result(200, 2.1, 150, 0.2), [])
            + search.rows({"sparsity": 0.8, "mode": "int8"}, result(90, 2.0, 80, 0.1),
                          ["accuracy drop 0.0900 exceeds maxAccuracyDrop 0.0500"])
            + search.rows({"sparsity": 0.5, "mode": "float16"}, result(250, 1.9, tfl_skipped="failed the gates"), [])
            + search.rows({"sparsity": 0.8, "mode": "qat"}, None, [], "not tried: the time budget of 60 s was spent"))


def test_rows_are_one_per_artefact_with_its_pulled_bytes_and_latency():
    rows = table()
    assert [(r["sparsity"], r["mode"], r["runtime"]) for r in rows] == [
        (0.0, "dynamic", "tensorflow"), (0.0, "dynamic", "tflite"), (0.5, "int8", "tensorflow"),
        (0.5, "int8", "tflite"), (0.8, "int8", "tensorflow"), (0.8, "int8", "tflite"),
        (0.5, "float16", "tensorflow"), (0.5, "float16", "tflite"), (0.8, "qat", "-")]
    assert rows[3]["compressedBytes"] == 150 and rows[3]["latencyMs"] == 0.2 and rows[3]["accuracyDrop"] == 0.02
    # The SavedModel failed a gate: nothing of that candidate can be published, its model.tflite neither.
    assert all(r["outcome"].startswith("failed the gates: accuracy drop") for r in rows[4:6])
    assert rows[7]["outcome"] == "not published: failed the gates"


def test_size_objective_takes_the_fewest_pulled_bytes_that_pass_the_gates():
    rows = table()
    winner = search.choose(rows, "size")
    assert (winner["sparsity"], winner["mode"], winner["runtime"]) == (0.5, "int8", "tflite")  # 0.8 failed its gate
    assert winner["outcome"] == "won"
    assert rows[0]["outcome"] == "lost: 300 gzip bytes against the winner's 150"
    summary = search.summary(rows, winner, "size", 60)
    assert summary == {"objective": "size", "budgetSeconds": 60, "candidates": 5, "tried": 4,
                       "winner": {"sparsity": 0.5, "mode": "int8", "runtime": "tflite"}}


def test_latency_objective_breaks_ties_on_size():
    rows = (search.rows({"sparsity": 0.0, "mode": "dynamic"}, result(300, 1.0), [])
            + search.rows({"sparsity": 0.5, "mode": "dynamic"}, result(200, 1.0), []))
    winner = search.choose(rows, "latency")
    assert winner["sparsity"] == 0.5 and rows[0]["outcome"] == "lost on the tie-break: 300 against the winner's 200"


def test_nothing_passing_has_no_winner():
    rows = search.rows({"sparsity": 0.9, "mode": "int8"}, result(90, 2.0), ["compression 1.10x is below"])
    assert search.choose(rows, "size") is None and rows[0]["outcome"].startswith("failed the gates")
