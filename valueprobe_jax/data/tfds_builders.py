"""TFDS dataset builders for the question bank, the value-action scenarios and the WVS-7 human
distributions, so every host of a pod reads one prepared, versioned copy.

They run without TensorFlow: examples are written as array_record files and read back with
`builder.as_data_source()` (random access, plain NumPy/bytes). `prepare(...)` builds one;
`read_questions / read_scenarios / read_human` return plain Python and NumPy from a prepared copy.

    from valueprobe_jax.data import tfds_builders as tb
    tb.prepare("wvs7_questions", data_dir="~/tensorflow_datasets")          # mirror or download
    tb.prepare("wvs7_human", data_dir=..., manual_dir="~/wvs")              # licensed CSV there
    questions = tb.read_questions(data_dir)
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from valueprobe_jax.data import sources
from valueprobe_jax.data.questions import Question, load_question_bank
from valueprobe_jax.data.scenarios import Scenario, load_scenarios
from valueprobe_jax.data.wvs_human import human_distributions
from valueprobe_jax.errors import InputError

_PINNED = f"github.com/{sources.REPO} @ {sources.COMMIT[:7]}"


class _Base(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared constructor: `source_dir` is the data mirror (None: $VALUEPROBE_DATA_DIR, else the
    pinned download); array_record is the default file format."""

    VERSION = tfds.core.Version("1.0.0")

    # TFDS looks for a checksums file next to the builder's code through importlib_resources,
    # which is not installed (nor needed: these builders download nothing through TFDS).
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)

    def __init__(self, *, source_dir: str | os.PathLike | None = None, **kwargs):
        self._source_dir = source_dir
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _questions(self) -> list[Question]:
        return load_question_bank(self._source_dir)


class Wvs7Questions(_Base):
    """The paper's 206 WVS-7 questions, canonical option order, with their thematic section."""

    name = "wvs7_questions"
    RELEASE_NOTES = {"1.0.0": f"input_dict.json (template0) of {_PINNED}."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "id": tfds.features.Text(), "question": tfds.features.Text(),
                "options": tfds.features.Sequence(tfds.features.Text()),
                "section": np.int32, "section_name": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, q in enumerate(self._questions()):
            yield i, {"id": q.id, "question": q.question, "options": list(q.options),
                      "section": q.section or 0, "section_name": q.section_name or ""}


class ValueActionScenarios(_Base):
    """The released value-action scenarios whose four verification verdicts are all Yes, with the
    question id they belong to ("" when the question is not in the bank). The kept/dropped report
    is in the dataset metadata ("report")."""

    name = "value_action_scenarios"
    RELEASE_NOTES = {"1.0.0": f"value_tasks_verified_parsed.json of {_PINNED}."}

    def __init__(self, *, scenarios_file: str | os.PathLike | None = None, **kwargs):
        self._scenarios_file = scenarios_file
        self._report = None
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            features=tfds.features.FeaturesDict({
                "row": np.int32, "qid": text, "section": np.int32, "question": text,
                "answer_a": text, "answer_b": text, "situation": text, "action_a": text,
                "action_b": text, "verification": text, "value": text}))

    def _split_generators(self, dl_manager):
        kept, report = load_scenarios(self._source_dir, path=self._scenarios_file,
                                      questions=self._questions())
        self.info.metadata["report"] = dataclasses.asdict(report)
        return {"train": self._generate_examples(kept)}

    def _generate_examples(self, kept):
        for s in kept:
            rec = dataclasses.asdict(s)
            rec["qid"] = s.qid or ""
            rec["section"] = s.section or 0
            yield s.row, rec


class Wvs7Human(_Base):
    """WVS-7 human answer distributions (W_WEIGHT-weighted, canonical option order) per country
    and question of the bank, from the licensed respondent CSV in manual_dir."""

    name = "wvs7_human"
    RELEASE_NOTES = {"1.0.0": "WVS-7 respondent CSV (user-supplied) x the paper's 206 questions."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the WVS-7 cross-national respondent data as CSV (WVS_Cross-National_Wave_7_csv_"
        "*.csv) from https://www.worldvaluessurvey.org under its licence and put the file (only "
        "one .csv) in manual_dir.")

    def __init__(self, *, countries: list[str] | None = None, **kwargs):
        self._countries = countries
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self.__doc__, disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "country": tfds.features.Text(), "qid": tfds.features.Text(),
                "probs": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                "n_valid": np.int64}))

    def _split_generators(self, dl_manager):
        manual = pathlib.Path(dl_manager.manual_dir)
        csvs = sorted(manual.glob("*.csv")) if manual.is_dir() else []
        if len(csvs) != 1:
            raise InputError(f"{manual}: expected exactly one WVS-7 .csv file, found {len(csvs)}")
        human = human_distributions(csvs[0], self._questions(), self._countries)
        return {"train": self._generate_examples(human)}

    def _generate_examples(self, human):
        for country in sorted(human.dist):
            for qid, p in human.dist[country].items():
                yield f"{country}/{qid}", {"country": country, "qid": qid,
                                           "probs": p.astype(np.float32),
                                           "n_valid": human.n_valid[country][qid]}


BUILDERS = {cls.name: cls for cls in (Wvs7Questions, ValueActionScenarios, Wvs7Human)}


def _data_dir(data_dir) -> str:
    return str(pathlib.Path(data_dir).expanduser())


def prepare(name: str, data_dir: str | os.PathLike, *, manual_dir: str | os.PathLike | None = None,
            **builder_kwargs) -> tfds.core.DatasetBuilder:
    """Build (once) the named dataset under data_dir; returns the builder."""
    if name not in BUILDERS:
        raise InputError(f"dataset {name!r}: unknown (choose from {', '.join(BUILDERS)})")
    builder = BUILDERS[name](data_dir=_data_dir(data_dir), **builder_kwargs)
    if builder.MANUAL_DOWNLOAD_INSTRUCTIONS and not builder.is_prepared():
        # Check here: TFDS itself stops with an AssertionError on a missing or empty manual_dir.
        manual = pathlib.Path(manual_dir or pathlib.Path(builder.data_dir).parents[1]
                              / "downloads" / "manual").expanduser()
        found = sorted(manual.glob("*.csv")) if manual.is_dir() else []
        if len(found) != 1:
            raise InputError(f"{manual}: expected exactly one WVS-7 .csv file in manual_dir, "
                             f"found {len(found)}")
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def _source(name: str, data_dir) -> list[dict]:
    builder = BUILDERS[name](data_dir=_data_dir(data_dir))
    if not builder.is_prepared():
        raise InputError(f"{data_dir}: dataset {name} is not prepared there")
    source = builder.as_data_source(split="train")
    return [source[i] for i in range(len(source))]


def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def read_questions(data_dir: str | os.PathLike) -> list[Question]:
    """The prepared question bank, in canonical order."""
    return [Question(_str(r["id"]), _str(r["question"]), tuple(_str(o) for o in r["options"]),
                     int(r["section"]) or None) for r in _source("wvs7_questions", data_dir)]


def read_scenarios(data_dir: str | os.PathLike) -> list[Scenario]:
    """The prepared kept scenarios, in file order."""
    out = []
    for r in _source("value_action_scenarios", data_dir):
        f = {k: _str(r[k]) for k in ("question", "answer_a", "answer_b", "situation", "action_a",
                                     "action_b", "verification", "value")}
        out.append(Scenario(row=int(r["row"]), qid=_str(r["qid"]) or None,
                            section=int(r["section"]) or None, **f))
    return out


def read_human(data_dir: str | os.PathLike) -> dict[str, dict[str, np.ndarray]]:
    """The prepared human distributions: {alpha3: {qid: probabilities (float32)}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in _source("wvs7_human", data_dir):
        out.setdefault(_str(r["country"]), {})[_str(r["qid"])] = np.asarray(r["probs"])
    return out


def scenario_report(data_dir: str | os.PathLike) -> dict:
    """The kept/dropped report stored with the prepared scenarios."""
    builder = ValueActionScenarios(data_dir=_data_dir(data_dir))
    return dict(builder.info.metadata.get("report", {}))
