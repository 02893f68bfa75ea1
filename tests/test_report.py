"""`valueprobe report` end to end on a synthetic results dir written here with the real row schema
(3 models x 3 methods, 3 styles x 5 variants incl. shuffle, 2 countries, action ratings)."""

import json

import matplotlib.image
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from valueprobe_jax.analysis.loading import load_results
from valueprobe_jax.analysis.report import analyze, human_from_wvs, load_human_json, to_json
from valueprobe_jax.analysis import metrics as M
from valueprobe_jax.probing import representations as R
from valueprobe_jax.cli import main
from valueprobe_jax.cli.report import _read_qids
from valueprobe_jax.experiments.results import write_rows_atomic
from valueprobe_jax.vocabulary import STYLES, VARIANTS

MODELS = ("tiny-a", "tiny-b", "tiny-c")
COUNTRIES = ("Egypt", "Germany")
QUESTIONS = {"Q1": 4, "Q2": 3, "Q3": 10, "Q4": 5, "Q5": 2, "Q6": 4}  # qid -> k (Q3: 10 options)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _labels(variant, k):
    if variant == "num":
        return [str(i) for i in range(k)]
    letters = [chr(ord("A") + i) for i in range(k)]
    if variant == "lower":
        return [x.lower() for x in letters]
    if variant == "reverse":
        return letters[::-1]
    return letters


def _display_order(variant, qid, k):
    if variant == "shuffle":
        return np.random.default_rng(sum(map(ord, qid))).permutation(k).tolist()
    return list(range(k))  # reverse keeps the text order, only labels change


def _probe_row(rng, model, experiment, style, variant, country, qid, k, sharp, truth):
    order = _display_order(variant, qid, k)
    p = truth[(model, qid)] * np.exp(rng.normal(0, 0.3 + 0.2 * (style != "default"), k))
    if country:
        p = 0.5 * p / p.sum() + 0.5 * np.eye(k)[{"Egypt": k - 1, "Germany": 0}[country]]
    p = p / p.sum()
    disp = p[order]  # display order: displayed option i is canonical order[i]
    logits = sharp * np.log(disp) + rng.normal(0, 0.1, k)
    logits_space = logits - 1.0
    ntok = rng.integers(3, 8, k)
    loglik = ntok * np.log(disp) * 0.5 - ntok
    pi = np.append(p * 0.9, 0.1)  # 10% unparseable answers
    draws = rng.choice(k + 1, 10, p=pi / pi.sum())
    parsed = [None if d == k else int(d) for d in draws]
    return {
        "key": f"{model}|{experiment}|{style}|{variant}|{country}|{qid}", "model": model,
        "experiment": experiment, "style": style, "variant": variant, "country": country,
        "qid": qid,
        "labels": _labels(variant, k), "display_order": order,
        "token_logits": logits.tolist(), "token_logits_space": logits_space.tolist(),
        "option_logprob": loglik.tolist(), "option_ntokens": ntok.tolist(),
        "p_token": R.p_token(logits, logits_space, order).tolist(),
        "p_seq": R.p_seq(loglik, ntok, order).tolist(),
        "p_text": R.p_text(parsed, k).tolist(),
        "generations": [f"Answer {x}" for x in parsed], "parsed": parsed,
        "n_prompt_tokens": 100, "seed": 0,
    }


def _action_rows(rng, model, truth):
    rows = []
    for qid, k in QUESTIONS.items():
        wa, wb = M.scale_end_weights(truth[(model, qid)])
        for sid in range(2):
            for action, w in (("A", wa), ("B", wb)):
                for template in range(3):
                    rating = float(np.clip(round(1 + 9 * w + rng.normal(0, 1)), 1, 10))
                    rows.append({"key": f"rating|{model}|{qid}|{sid}|{action}|t{template}",
                                 "model": model, "experiment": "action_agreement", "qid": qid,
                                 "scenario_id": f"{qid}-{sid}", "action": action,
                                 "template": template,
                                 "rating_text": [rating, None if template == 1 else rating],
                                 "rating_expected": 1 + 9 * w, "seed": 0})
    return rows


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    truth = {(m, q): rng.dirichlet(np.ones(k)) for m in MODELS for q, k in QUESTIONS.items()}
    human = {}
    for c in COUNTRIES:
        for q, k in QUESTIONS.items():
            human.setdefault(c, {})[q] = rng.dirichlet(np.ones(k)).tolist()
    human["Egypt"]["Q6"] = [0.0] * 4  # not asked there
    for i, model in enumerate(MODELS):
        rob = [_probe_row(rng, model, "robustness", s, v, None, q, k, 1 + i, truth)
               for s in STYLES for v in VARIANTS for q, k in QUESTIONS.items()]
        dem = [_probe_row(rng, model, "demographic", s, "baseline", c, q, k, 1 + i, truth)
               for s in STYLES for c in (None, *COUNTRIES) for q, k in QUESTIONS.items()]
        write_rows_atomic(rob, root / "shards" / f"robustness-{model}.parquet")
        write_rows_atomic(dem, root / "demographic" / model / "results.parquet")
        write_rows_atomic(_action_rows(rng, model, truth),
                          root / "shards" / f"actions-{model}.parquet")
    hfile = tmp_path_factory.mktemp("human") / "human.json"
    hfile.write_text(json.dumps(human))
    return root, hfile


@pytest.fixture(scope="module")
def report_dir(synthetic, tmp_path_factory):
    """One full `valueprobe report` run shared by the tests below (figures take seconds)."""
    root, hfile = synthetic
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(root), "--out", str(out), "--human", str(hfile),
                 "--bootstrap", "100"]) == 0
    return out


def test_report_end_to_end(report_dir):
    out = report_dir
    figs = out / "figures"
    for stem in ("fig2_prompt_robustness", "fig3_selection_bias", "fig4_value_action",
                 "fig5_alignment_improvement"):
        png, pdf = figs / f"{stem}.png", figs / f"{stem}.pdf"
        assert png.read_bytes()[:8] == PNG_MAGIC
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.01  # not a blank canvas
        data = pdf.read_bytes()
        assert data[:5] == b"%PDF-" and b"%%EOF" in data[-1024:] and len(data) > 1000
    text = (out / "report.md").read_text()
    for name in (*MODELS, "token", "seq", "text", "Mismatch rate", "JS distance",
                 "Prompt robustness", "Selection bias", "Table 2", "Alignment improvement",
                 "Value-action agreement", "noise floor", "Pearson", "Spearman", "Egypt",
                 "Germany"):
        assert name in text, name
    assert f"| token | {M.NEEDS_3_MODELS}" not in text  # 3 models: numbers
    assert "Paper (published Table 2" in text and "0.899" in text  # PAPER_FACTS.md numbers
    assert "- p_token differs from its logits: 0" in text
    assert "- p_text differs from its parsed samples: 0" in text
    assert "- duplicate rows dropped: 0" in text
    for stem in ("fig2_prompt_robustness", "fig5_alignment_improvement"):
        assert f"figures/{stem}.png" in text


def test_report_numbers_match_direct_metrics(synthetic, report_dir):
    """metrics.json agrees with the metric functions fed the stored canonical distributions,
    including the shuffled variant (its display-order logits mapped back by hand here)."""
    root, _ = synthetic
    got = json.loads((report_dir / "metrics.json").read_text())
    table = pq.read_table(root / "shards" / "robustness-tiny-b.parquet").to_pylist()
    by = {}
    for r in table:
        # recompute p_token from the raw display-order logits with our own canonical mapping
        both = np.exp(np.concatenate([r["token_logits"], r["token_logits_space"]]))
        k = len(r["token_logits"])
        p_canon = np.empty(k)
        p_canon[r["display_order"]] = (both[:k] + both[k:]) / both.sum()  # displayed i is canonical order[i]
        by.setdefault(r["variant"], {}).setdefault(r["style"], {})[r["qid"]] = p_canon
    pr = M.prompt_robustness(by["baseline"])
    cell = got["prompt_robustness"]["tiny-b"]["token"]["baseline"]
    assert cell["js"]["value"] == pytest.approx(pr.js.mean(), abs=1e-9)
    assert cell["mismatch"]["value"] == pytest.approx(pr.mismatch.mean(), abs=1e-12)
    sb = M.selection_bias(by)
    cell = got["selection_bias"]["tiny-b"]["token"]
    assert cell["variants"] == list(VARIANTS)
    assert cell["js"]["value"] == pytest.approx(sb.js.mean(), abs=1e-9)
    assert cell["js"]["lo"] <= cell["js"]["value"] <= cell["js"]["hi"]
    sb = M.selection_bias({"baseline": by["baseline"], "shuffle": by["shuffle"]})
    cell = got["selection_bias_vs_baseline"]["tiny-b"]["token"]["shuffle"]
    assert cell["mismatch"]["value"] == pytest.approx(sb.mismatch.mean(), abs=1e-12)
    assert cell["js"]["value"] == pytest.approx(sb.js.mean(), abs=1e-9)
    t2 = got["table2"]["seq"]["js"]
    assert t2["n"] == 3 and t2["r"] is not None and 0 <= t2["p"] <= 1
    va = got["value_action"]["tiny-a"]["token"]
    assert set(va) == {"text", "expected"} and va["text"]["n_points"] == 2 * len(QUESTIONS)
    al = got["alignment"]["tiny-c"]["seq"]
    # 3 styles x (2 countries x 6 questions - Egypt's unasked Q6)
    assert al["n_cells"] == 3 * (2 * len(QUESTIONS) - 1)
    # the synthetic country prompt pulls towards a country-specific end, so it moves alignment
    assert al["improvement"]["value"] != 0
    nf = got["noise_floor"]["tiny-a"]
    assert nf["n_samples"] == 10 and 0 < nf["floor"]["value"] < nf["split_half"]["value"]


def test_report_deterministic(synthetic):
    root, hfile = synthetic
    res = load_results(root)
    human = load_human_json(hfile)
    runs = [json.dumps(to_json(analyze(res, human, n_boot=30, seed=5)), sort_keys=True)
            for _ in range(2)]
    assert runs[0] == runs[1]
    other = json.dumps(to_json(analyze(res, human, n_boot=30, seed=6)), sort_keys=True)
    assert other != runs[0]  # the seed does reach the bootstrap


def test_report_two_models_says_needs_three(synthetic, tmp_path):
    root, _ = synthetic
    two = tmp_path / "two"
    two.mkdir()
    for m in MODELS[:2]:
        t = pq.read_table(root / "shards" / f"robustness-{m}.parquet")
        pq.write_table(t, two / f"{m}.parquet")
    out = tmp_path / "out"
    assert main(["report", str(two), "--out", str(out), "--bootstrap", "20"]) == 0
    text = (out / "report.md").read_text()
    assert "| token | needs >= 3 models | needs >= 3 models | 2 |" in text
    assert "No action_agreement rows" in text and "No demographic" in text
    for stem in ("fig4_value_action", "fig5_alignment_improvement"):  # placeholders still drawn
        assert (out / "figures" / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC


def test_report_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"valueprobe report: error: {empty}: "
                   "no .parquet result files under this directory")
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not a directory" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"model": ["m"], "experiment": ["robustness"], "qid": ["Q1"],
                             "style": ["default"], "variant": ["baseline"]}), bad / "x.parquet")
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "results lack the column(s) country, p_token, p_seq, p_text, parsed" in err
    assert err.count("\n") == 1  # one line, no traceback
    pq.write_table(pa.table({"a": [1]}), bad / "x.parquet")
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "lack the column(s) model, experiment, qid" in capsys.readouterr().err
    (bad / "x.parquet").write_bytes(b"not parquet")
    assert main(["report", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err


def test_loader_reads_all_shards(synthetic):
    root, _ = synthetic
    res = load_results(root)
    assert res.models() == list(MODELS)
    assert len(res.files) == 9 and res.variants() == list(VARIANTS)
    assert res.countries() == list(COUNTRIES)
    # the demographic sweep's own no-country rows do not replace the robustness sweep's
    assert {r.experiment for r in res.no_country_rows("tiny-a").values()} == {"robustness"}
    assert len(res.ratings) == 3 * len(QUESTIONS) * 2 * 2 * 3


def test_human_from_wvs_csv(tmp_path, data_dir):
    """The --wvs-csv path: names used in the results map to the CSV's alpha-3 codes."""
    csv = tmp_path / "wvs.csv"
    csv.write_text("B_COUNTRY_ALPHA,W_WEIGHT,Q1,Q94\n"
                   "EGY,1.0,1,0\nEGY,2.0,2,2\nEGY,1.0,-1,1\nDEU,1.0,4,-2\n")
    human = human_from_wvs(csv, ["Egypt", "Germany"], data_dir)
    # Egypt Q1: codes 1 (w 1) and 2 (w 2), the -1 is missing -> [1/3, 2/3, 0, 0]
    assert human[("Egypt", "Q1")].tolist() == pytest.approx([1 / 3, 2 / 3, 0, 0])
    # Q94 is coded from 0: codes 0, 2, 1 with weights 1, 2, 1
    assert human[("Egypt", "Q94")].tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert human[("Germany", "Q1")].tolist() == [0, 0, 0, 1]
    assert ("Germany", "Q94") not in human  # no valid answer


def test_alignment_questions_filter(synthetic, tmp_path):
    root, hfile = synthetic
    a = analyze(load_results(root), load_human_json(hfile), n_boot=10, alignment_qids=["Q1", "Q3"])
    assert a.alignment["tiny-a"]["token"].improvement.qids == ("Q1", "Q3")
    qfile = tmp_path / "q.txt"
    qfile.write_text("Q1\nQ3\n")
    assert _read_qids(str(qfile)) == ["Q1", "Q3"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"Q1": 1}')
    assert main(["report", str(root), "--out", str(tmp_path / "o"), "--alignment-questions",
                 str(bad)]) == 2


# --------------------------------------------------------------------------- --procedure paper


def test_report_paper_procedure_renders_every_table(synthetic, tmp_path):
    root, hfile = synthetic
    out = tmp_path / "paper"
    assert main(["report", str(root), "--out", str(out), "--human", str(hfile),
                 "--bootstrap", "20", "--procedure", "paper"]) == 0
    text = (out / "report.md").read_text()
    for name in ("Procedure: paper", "Table 2", "Paper r", "0.899", "2.951e-05",
                 "Table 3: questions per WVS-7 section", "Religious Values", "| 10 |",
                 'Token sets: "A" vs " A"', "our reconstruction", "over 0.5", "Valid text answers",
                 "Mean count (release column)", "Agreement between the methods",
                 "token vs seq", "seq vs text", "In raw EMD units", "Improvement (EMD) [CI]",
                 "As alignment gain", "ordinal filter is a no-op", "Left out by that filter",
                 "China, Egypt, Germany, Mexico, United States"):
        assert name in text, name
    assert (out / "figures" / "fig5_alignment_improvement.png").read_bytes()[:8] == PNG_MAGIC
    got = json.loads((out / "metrics.json").read_text())
    assert got["procedure"] == "paper"
    assert got["selection_bias"]["tiny-a"]["token"]["variants"] == ["baseline", "reverse", "num"]
    assert got["value_action"] == {}  # no model named "instruct" here
    assert set(got["token_set_mismatch"]) == set(MODELS)
    assert set(got["valid_answers"]["tiny-a"]) == {"baseline", "reverse", "num"}
    assert set(got["method_agreement"]["tiny-b"]) == {"token-seq", "token-text", "seq-text"}
    emd = got["alignment_emd"]["tiny-c"]["seq"]
    assert emd["countries"] == ["Egypt", "Germany"] and emd["n_cells"] == 2
    assert got["paper_table2"]["token"]["mismatch"] == {"r": 0.899, "p": 2.951e-5}
    # paper selection bias = ours restricted to the release's three variants
    res = load_results(root)
    ours3 = analyze(res, load_human_json(hfile), n_boot=20,
                    selection_variants=["baseline", "reverse", "num"])
    assert got["selection_bias"]["tiny-b"]["seq"]["js"]["value"] == pytest.approx(
        ours3.selection["tiny-b"]["seq"].js.mean(), abs=1e-12)
    # alignment gain of the paper procedure: the release's countries and variants only
    assert got["alignment"]["tiny-c"]["seq"]["n_cells"] == 3 * (2 * len(QUESTIONS) - 1)


def test_paper_tables_computed_by_hand(synthetic):
    """Token-set mismatch, valid ratio and method agreement of the report against hand loops over
    the stored rows (argmax of the raw logits; parsed samples; stored canonical distributions)."""
    root, hfile = synthetic
    a = analyze(load_results(root), load_human_json(hfile), n_boot=0, procedure="paper")
    rows = [r for r in pq.read_table(root / "shards" / "robustness-tiny-b.parquet").to_pylist()
            if r["variant"] in ("baseline", "reverse", "num")]
    per_q, valid, agree = {}, {}, {}
    for r in rows:
        per_q.setdefault(r["qid"], []).append(
            float(np.argmax(r["token_logits"]) != np.argmax(r["token_logits_space"])))
        if r["variant"] == "num" and r["style"] == "one_shot":
            valid[r["qid"]] = sum(x is not None for x in r["parsed"]) / len(r["parsed"])
        agree.setdefault(r["qid"], []).append(
            float(np.argmax(r["p_token"]) != np.argmax(r["p_text"])))
    want = np.mean([np.mean(v) for v in per_q.values()])
    assert a.token_set["tiny-b"].mean() == pytest.approx(want, abs=1e-12)
    va = a.valid["tiny-b"]["num"]["one_shot"]
    assert va.ratio.mean() == pytest.approx(np.mean(list(valid.values())), abs=1e-12)
    assert va.mean_count == pytest.approx(10 * np.mean(list(valid.values())), abs=1e-12)
    mm = a.method_agree["tiny-b"][("token", "text")].mismatch
    assert mm.mean() == pytest.approx(np.mean([np.mean(v) for v in agree.values()]), abs=1e-12)
    assert a.middle == "second" and a.selection_variants == ["baseline", "reverse", "num"]


def test_paper_value_action_instruct_only_and_released_rating_parse(tmp_path):
    rows = []
    rng = np.random.default_rng(1)
    for model in ("tiny-instruct", "bloomz-tiny"):
        truth = {(model, q): rng.dirichlet(np.ones(k)) for q, k in QUESTIONS.items()}
        for v in ("baseline", "reverse", "num", "lower"):
            rows += [_probe_row(rng, model, "robustness", s, v, None, q, k, 1, truth)
                     for s in STYLES for q, k in QUESTIONS.items()]
        for qid in QUESTIONS:
            for action, gens in (("A", ["7", "no idea"]), ("B", ["Rating: 15 points", "3"])):
                rows.append({"key": f"r|{model}|{qid}|{action}", "model": model,
                             "experiment": "action_agreement", "qid": qid,
                             "scenario_id": f"{qid}-0", "action": action, "template": 0,
                             "generations": gens, "rating_text": [7.0, None] if action == "A"
                             else [None, 3.0], "rating_expected": 5.0, "seed": 0})
    write_rows_atomic(rows, tmp_path / "r" / "results.parquet")
    res = load_results(tmp_path / "r")
    rating = {r.action: r.rating for r in res.ratings if r.model == "tiny-instruct"}
    assert rating["A"]["text"] == 7.0 and rating["A"]["text_paper"] == 3.0  # (7 + -1) / 2
    assert rating["B"]["text"] == 3.0 and rating["B"]["text_paper"] == 9.0  # (15 + 3) / 2
    a = analyze(res, n_boot=0, procedure="paper")
    assert set(a.agreement) == {"tiny-instruct"}  # bloomz-tiny: no "instruct" in the name
    ag = a.agreement["tiny-instruct"]["token"]["text"]
    probes = res.action_probes("tiny-instruct", "token", ["baseline", "reverse", "num"])
    want = M.value_action_agreement(probes, {(q, act): {"A": 3.0, "B": 9.0}[act]
                                             for q in QUESTIONS for act in "AB"},
                                    middle="second", n_boot=0)
    assert ag.pearson.r == pytest.approx(want.pearson.r, abs=1e-12)
    assert "bloomz-tiny" in a.value_action_note and "-1" in a.value_action_note
    ours = analyze(res, n_boot=0)
    assert set(ours.agreement) == {"tiny-instruct", "bloomz-tiny"} and ours.middle == "split"



def test_report_to_object_storage(synthetic, tmp_path, monkeypatch):
    """`--out s3://...` (a bucket): the same report.md and metrics.json as on a local disk,
    written as whole objects (the fake store fails any rename)."""
    from etils.epath import gpath

    from helpers import FakeObjectStore
    from valueprobe_jax import io

    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "s3", FakeObjectStore())  # noqa: SLF001
    root, hfile = synthetic
    local, remote = tmp_path / "local", f"s3://bkt/report-{tmp_path.name}"
    for out in (str(local), remote):
        assert main(["report", str(root), "--out", out, "--human", str(hfile),
                     "--bootstrap", "20"]) == 0
    for name in ("report.md", "metrics.json"):
        assert io.as_path(f"{remote}/{name}").read_text() == (local / name).read_text()
    pngs = sorted(p.name for p in io.as_path(f"{remote}/figures").iterdir())
    assert pngs == sorted(p.name for p in (local / "figures").iterdir()) and pngs
